"""docs/add_a_cell.md: every ```python block runs on its own as a doctest, as the
README's do (fresh globals, JAX's default float32)."""

from pathlib import Path

import jax

from tests.test_readme import run_blocks

PAGE = Path(__file__).resolve().parents[1] / "docs" / "add_a_cell.md"


def test_add_a_cell_page_blocks_are_doctests_that_run_alone():
  with jax.enable_x64(False), jax.numpy_rank_promotion("allow"):
    n, problems = run_blocks(PAGE.read_text(encoding="utf-8"), PAGE.name)
  assert n == 2, f"expected the page's two worked blocks, found {n}"
  assert not problems, "\n\n".join(problems)

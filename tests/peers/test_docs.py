"""docs/nnx.md and docs/interop.md: every ```python block runs on its own as a
doctest, as README.md's do (tests/test_readme.py); a block that imports torch
is skipped where torch is not installed (PyTorch is an optional extra)."""

import doctest
import importlib.util
from pathlib import Path

import jax
import pytest

from tests.test_readme import OPTIONS, python_blocks

DOCS = Path(__file__).resolve().parents[2] / "docs"
HAVE_TORCH = importlib.util.find_spec("torch") is not None


@pytest.mark.parametrize("page", ["nnx.md", "interop.md"])
def test_docs_python_blocks_are_doctests_that_run_alone(page):
  text = (DOCS / page).read_text(encoding="utf-8")
  blocks = python_blocks(text)
  assert blocks, f"{page} has no ```python block"
  problems, skipped = [], 0
  with jax.enable_x64(False), jax.numpy_rank_promotion("allow"):
    for line, source in blocks:
      test = doctest.DocTestParser().get_doctest(source, {}, f"{page}:{line}", page, line)
      if not test.examples:
        problems.append(f"{page}:{line}: ```python block has no >>> prompts")
        continue
      if "import torch" in source and not HAVE_TORCH:
        skipped += 1
        continue
      report: list[str] = []
      result = doctest.DocTestRunner(optionflags=OPTIONS).run(
        test, out=report.append, clear_globs=True
      )
      if result.failed:
        problems.append(f"{page}:{line}: fails {result.failed} examples:\n" + "".join(report))
  assert not problems, "\n\n".join(problems)
  if skipped == len(blocks):
    pytest.skip(f"every block of {page} needs torch")

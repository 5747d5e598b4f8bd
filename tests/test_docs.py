"""The manual: every ```python block of docs/ runs, every table is current, no stored file
names the building machine's paths, the demo's figures say what they plot, and the site
builds with every internal link resolving.

A block that needs minutes or torch is kept out of the run by an HTML comment on the line
just above its fence, which the site does not show:

    <!-- doctest: skip (needs torch) -->
    ```python
    import torch  # not run: the comment above turns the block into text
    ```

Building the site takes longer than the suite's budget for one test (about 10 s of CPU,
a minute or more on a loaded 2-core machine), so `test_site_builds_and_every_internal_link_
resolves` runs only with RNNJAX_DOCS_BUILD=1, which `make docs` (part of CI) sets.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import tables  # noqa: E402
from test_readme import python_blocks, run_blocks  # noqa: E402

HAVE_TORCH = importlib.util.find_spec("torch") is not None
SKIP = re.compile(r"^\s*<!--\s*doctest:\s*skip\b.*-->\s*$")


def doc_pages() -> list[Path]:
  """Every markdown page of docs/ this branch writes (not through the symlinked folders)."""
  pages = [p for p in DOCS.rglob("*.md") if not any(q.is_symlink() for q in p.parents)]
  return sorted(p for p in pages if p.parent == DOCS or p.parent.parent == DOCS)


def without_skipped(text: str, have_torch: bool = HAVE_TORCH) -> str:
  """``text`` with each ```python fence that a ``<!-- doctest: skip -->`` line precedes
  turned into a ```text fence, so `run_blocks` leaves it out; without torch (an optional
  extra) a block that imports it is left out the same way."""
  lines = text.splitlines()
  fences = [i for i, line in enumerate(lines) if line.strip().startswith("```python")]
  for i in fences:
    body = list(itertools.takewhile(lambda line: line.strip() != "```", lines[i + 1 :]))
    needs_torch = any(re.search(r"\bimport torch\b", line) for line in body)
    if (i and SKIP.match(lines[i - 1])) or (needs_torch and not have_torch):
      lines[i] = lines[i].replace("```python", "```text", 1)
  return "\n".join(lines) + "\n"


@pytest.mark.parametrize("page", [str(p.relative_to(ROOT)) for p in doc_pages()])
def test_docs_python_blocks_are_doctests_that_run_alone(page):
  text = without_skipped((ROOT / page).read_text(encoding="utf-8"))
  if not python_blocks(text):
    pytest.skip(f"{page} has no ```python block")
  with jax.enable_x64(False), jax.numpy_rank_promotion("allow"):
    _, problems = run_blocks(text, page)
  assert not problems, "\n\n".join(problems)


def test_a_skip_comment_keeps_exactly_the_next_block_out():
  text = (
    "<!-- doctest: skip (needs torch) -->\n```python\n>>> 1/0\n```\n\n```python\n>>> 1\n1\n```\n"
  )
  assert [line for line, _ in python_blocks(without_skipped(text))] == [6]
  assert len(python_blocks(text)) == 2
  torch_block = "```python\n>>> import torch\n```\n"
  assert python_blocks(without_skipped(torch_block, have_torch=False)) == []
  assert len(python_blocks(without_skipped(torch_block, have_torch=True))) == 1


def test_every_guide_has_runnable_code():
  guides = sorted((DOCS / "guides").glob("*.md"))
  assert len(guides) >= 9
  bare = [g.name for g in guides if g.name != "notebooks.md" and not python_blocks(g.read_text())]
  assert bare == [], f"guides without a ```python doctest block: {bare}"


# ---------------------------------------------------------------- tables and charts


def test_every_table_matches_what_tables_py_writes():
  stale = tables.stale_pages()
  assert not stale, f"{stale}: run python benchmarks/tables.py"


def test_tables_py_rewrites_a_hand_edited_table_and_refuses_an_unknown_one():
  good = tables.render("x\n<!-- table: demo -->\nanything\n<!-- /table -->\ny\n")
  assert good.startswith("x\n<!-- table: demo -->\n| run |") and good.endswith(
    "<!-- /table -->\ny\n"
  )
  assert tables.render(good) == good
  edited = good.replace("| 4890 in", "| 4900 in", 1)
  assert edited != good and tables.render(edited) == good
  with pytest.raises(KeyError, match="unknown table 'nope'"):
    tables.render("<!-- table: nope -->\n<!-- /table -->", "page.md")


def test_the_pages_embed_tables_and_charts_that_exist():
  text = "\n".join(p.read_text(encoding="utf-8") for p in doc_pages())
  names = set(re.findall(r"<!-- table: ([a-z0-9_]+) -->", text))
  assert {"kernels_cpu", "memory_cpu", "parallel_cpu", "min_cells_cpu", "hmlstm_lm_cpu"} <= names
  for png in re.findall(r"\]\(((?:\.\./)?figures/[a-z_]+\.png)\)", text):
    assert (DOCS / png.removeprefix("../")).is_file(), png


def test_readme_is_a_front_page():
  readme = (ROOT / "README.md").read_text(encoding="utf-8")
  assert len(readme.encode()) <= 10_000
  assert "pip install rnnjax" in readme and "make demo" in readme and "make test" in readme
  images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", readme)
  assert len(images) >= 2 and all((ROOT / p).is_file() for p in images), images
  for link in re.findall(r"\]\((docs/[^)#]+)", readme):
    assert (ROOT / link).is_file(), link


# ---------------------------------------------------------------- no machine paths

MACHINE_PATH = re.compile(r"(?<![\w.])/(?:root|home/[\w.-]+|work|tmp/[\w.-]+|Users/[\w.-]+)/")


def test_no_stored_file_names_the_building_machines_paths():
  roots = [ROOT / "benchmarks" / "results", DOCS, ROOT / "notebooks", ROOT / "README.md"]
  files = []
  for r in roots:
    files += [r] if r.is_file() else [p for p in r.rglob("*") if p.is_file()]
  bad = []
  for f in files:
    if f.suffix in {".png", ".pyc"} or "__pycache__" in f.parts:
      continue
    text = f.read_text(encoding="utf-8", errors="replace")
    for m in MACHINE_PATH.finditer(text):
      line = text.count("\n", 0, m.start()) + 1
      bad.append(f"{f.relative_to(ROOT)}:{line}: {text[m.start() : m.start() + 60]!r}")
  assert not bad, "absolute paths of the building machine:\n" + "\n".join(bad[:20])


def test_machine_path_pattern():
  for s in ["/root/.pyenv/x", "(/home/ann/lib)", "at /work/main/a", "/tmp/pytest-1/x"]:
    assert MACHINE_PATH.search(s), s
  for s in ["runs/demo/summary.json", "a/root/b", "log2(V)/tmp", "benchmarks/results/x.json"]:
    assert not MACHINE_PATH.search(s), s


# ---------------------------------------------------------------- the demo's figures


def _diagnosis():
  import rnnjax as rj

  cell = rj.lstm(4)
  p = cell.init(jax.random.key(0), 2)
  return rj.jacobian.diagnose(cell, p, jax.random.normal(jax.random.key(1), (12, 2)))


def test_step_norms_figure_names_the_full_state_jacobian():
  from rnnjax.apps import plot

  fig = plot.step_norms_figure(_diagnosis())
  ax = fig.axes[0]
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert any(r"\partial s_t/\partial s_{t-1}" in t for t in labels)
  assert not any("h_t" in t for t in labels)
  assert "S = 2H = 8" in ax.get_title() and "[h_t; c_t]" in ax.get_title()
  plot.pyplot().close(fig)


def test_products_figure_draws_the_slope_behind_the_verdict_and_defines_L_T():
  from rnnjax.apps import plot

  report = _diagnosis()
  fig = plot.products_figure(report)
  ax = fig.axes[0]
  T, half = report["T"], report["T"] // 2
  logp = np.asarray(report["log_product_norm_by_lag"]) / np.log(10)
  seg = [ln for ln in ax.get_lines() if list(ln.get_xdata()) == [half, T]]
  assert len(seg) == 1
  np.testing.assert_allclose(seg[0].get_ydata(), [logp[half - 1], logp[-1]])
  # the segment's slope in natural log per step is the evidence's
  slope = (seg[0].get_ydata()[1] - seg[0].get_ydata()[0]) * np.log(10) / (T - half)
  np.testing.assert_allclose(slope, report["evidence"]["log_product_norm_per_step"], rtol=1e-6)
  text = " ".join(" ".join(t.get_text() for t in ax.get_legend().get_texts()).split())
  assert f"slope over lags {half}–{T}" in text and report["verdict"] in text
  assert "$L_T$: a loss on the last state only" in ax.get_title()
  plot.pyplot().close(fig)


def test_embedding_figure_labels_its_axes_and_every_class():
  from rnnjax.apps import plot

  chars = list("01ab()+ \n")
  fig = plot.embedding_figure(np.random.default_rng(0).normal(size=(len(chars), 6)), chars)
  ax = fig.axes[0]
  assert ax.get_xlabel().startswith("principal component 1 (")
  assert ax.get_ylabel().startswith("principal component 2 (")
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == [
    "digits (2)",
    "letters (2)",
    "brackets ()[]{} (2)",
    "other: whitespace, punctuation, operators, symbols (3)",
  ]
  plot.pyplot().close(fig)


# ---------------------------------------------------------------- the site


LINK_ATTRS = {("a", "href"), ("img", "src"), ("link", "href"), ("script", "src")}


class _Links(HTMLParser):
  def __init__(self):
    super().__init__()
    self.links: list[str] = []

  def handle_starttag(self, tag, attrs):
    for name, value in attrs:
      if value and (tag, name) in {
        ("a", "href"),
        ("img", "src"),
        ("link", "href"),
        ("script", "src"),
      }:
        self.links.append(value)


def broken_links(site: Path) -> list[str]:
  """``page: link`` for every link of the built site that is not a file in it.

  External links (with a scheme, or ``//host``) are collected as errors for scripts
  and stylesheets (the site must work offline) and ignored for ``<a href>``. The 404
  page is left out: a web server serves it for any missing URL, so its links are
  absolute from the site's root by design.
  """
  bad = []
  for page in sorted(site.rglob("*.html")):
    if page.relative_to(site) == Path("404.html"):
      continue
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    for link in parser.links:
      parts = urlsplit(link)
      if parts.scheme in ("http", "https") or link.startswith("//"):
        if not link.startswith(("http", "//")) or parts.path.endswith((".js", ".css")):
          bad.append(f"{page.relative_to(site)}: {link} (needs the network)")
        continue
      if parts.scheme or not parts.path:  # mailto:, data:, javascript:, #anchor
        continue
      target = (page.parent / unquote(parts.path)).resolve()
      if target.is_dir():
        bad.append(f"{page.relative_to(site)}: {link} (a directory: no page)")
      elif not target.is_file():
        bad.append(f"{page.relative_to(site)}: {link}")
  return bad


def test_broken_links_finds_missing_files_directories_and_cdn_scripts(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "a.png").write_bytes(b"")
  (tmp_path / "index.html").write_text(
    '<a href="sub/b.html#x">b</a><a href="sub/">dir</a><img src="a.png"><a href="c.html">c</a>'
    '<a href="https://example.org">out</a><script src="https://cdn.example/x.js"></script>'
    '<a href="#top">top</a><a href="mailto:x@y">m</a>'
  )
  (tmp_path / "sub" / "b.html").write_text('<a href="../index.html">up</a>')
  assert broken_links(tmp_path) == [
    "index.html: sub/ (a directory: no page)",
    "index.html: c.html",
    "index.html: https://cdn.example/x.js (needs the network)",
  ]


@pytest.mark.skipif(
  not os.environ.get("RNNJAX_DOCS_BUILD"),
  reason="builds the site (a minute on a loaded 2-core machine); `make docs` runs it",
)
def test_site_builds_and_every_internal_link_resolves(tmp_path):
  docs = tmp_path / "docs"
  shutil.copytree(DOCS, docs, symlinks=False)
  config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
  config = config.replace("docs_dir: docs", f"docs_dir: {docs}").replace(
    "paths: [.]", f"paths: [{ROOT}]"
  )
  (tmp_path / "mkdocs.yml").write_text(config)
  site = tmp_path / "site"
  mkdocs = Path(sys.executable).parent / "mkdocs"
  run = subprocess.run(
    [str(mkdocs), "build", "--strict", "-f", str(tmp_path / "mkdocs.yml"), "-d", str(site)],
    capture_output=True,
    text=True,
    env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
    cwd=ROOT,
  )
  assert run.returncode == 0, run.stderr[-4000:]
  for page in ["index.html", "guides/getting_started.html", "demo/report.html"]:
    assert (site / page).is_file(), page
  for nb in (ROOT / "notebooks").glob("*.ipynb"):
    html = (site / "notebooks" / nb.name.replace(".ipynb", ".html")).read_text()
    assert "data:image/png;base64" in html, f"{nb.name}: rendered without its figures"
  assert broken_links(site) == []
  for page in ["running.html", "cells.html", "layers.html", "jacobian.html"]:
    entries = nav_entries((site / page).read_text(encoding="utf-8"))
    assert entries, page
    assert not {"bptt", "parallel", "host", "kernel", "layers"} & set(entries), page
    twice = [a for a, b in itertools.pairwise(entries) if a == b]
    assert not twice, f"{page}: navigation lists {twice} twice in a row"


def nav_entries(html: str) -> list[str]:
  """The text of every navigation and table-of-contents link of a built page."""
  found = re.findall(r'class="md-nav__link">\s*<span class="md-ellipsis">(.*?)</span>', html, re.S)
  return [re.sub(r"<[^>]+>", "", t).strip() for t in found]


def test_nav_entries_reads_material_links():
  html = '<a href="x.html" class="md-nav__link">\n <span class="md-ellipsis">\n scan\n </span>'
  assert nav_entries(html) == ["scan"]

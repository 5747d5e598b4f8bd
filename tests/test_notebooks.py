"""Every notebook executes (at reduced sizes), and the stored copies match
their sources and carry outputs."""

import os
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "notebooks"))
import build  # noqa: E402


@pytest.mark.parametrize("name", list(build.NOTEBOOKS))
def test_notebook_executes(name, monkeypatch):
  monkeypatch.setenv("RNNJAX_NOTEBOOK_SCALE", "small")
  monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
  nb = build.execute(build.build(name), timeout=600)
  errors = [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.get("outputs", [])
    if o.output_type == "error"
  ]
  assert not errors
  images = [
    o
    for c in nb.cells
    if c.cell_type == "code"
    for o in c.get("outputs", [])
    if "image/png" in o.get("data", {})
  ]
  assert images, "every notebook draws at least one figure"


@pytest.mark.parametrize("name", list(build.NOTEBOOKS))
def test_stored_notebook_is_current_and_executed(name):
  stored = nbformat.read(ROOT / "notebooks" / name, as_version=4)
  sources = [c.source for c in stored.cells]
  assert sources == [src for _, src in build.NOTEBOOKS[name]], "run `make notebooks`"
  outputs = [o for c in stored.cells if c.cell_type == "code" for o in c.get("outputs", [])]
  assert any("image/png" in o.get("data", {}) for o in outputs)

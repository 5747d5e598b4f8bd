"""The paper reproductions (benchmarks/papers/): each command runs at a seconds-long
size and writes what the docs page reads; the stored results hold what the page claims;
benchmarks/tables.py renders the Reproductions page's tables, the HM-LSTM one whether or
not its result is stored yet."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAPERS = ROOT / "benchmarks" / "papers"
STORED = ROOT / "benchmarks" / "results" / "papers"
sys.path.insert(0, str(ROOT / "benchmarks"))
import tables  # noqa: E402

VARIANTS = ["V", "NIG", "NFG", "NOG", "NIAF", "NOAF", "NP", "CIFG", "FGR"]


def _script(name):
  spec = importlib.util.spec_from_file_location(f"papers_{name}", PAPERS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _no_paths(*files):
  for f in files:
    text = f.read_text(encoding="utf-8")
    assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, f


def test_greff2017_command_runs_at_a_seconds_long_size(tmp_path):
  argv = ["--seconds", "0.3", "--seeds", "2", "--variants", "V", "NP", "--hidden", "4"]
  argv += ["--corpus-chars", "60000", "--out", str(tmp_path), "--figure", str(tmp_path / "g.png")]
  result = _script("greff2017").main(argv)
  stored = json.loads((tmp_path / "greff2017.json").read_text())
  assert stored["command"] == result["command"]
  assert stored["command"].startswith("python benchmarks/papers/greff2017.py --seconds 0.3")
  for key in ("paper", "machine", "seeds", "seconds", "settings", "runs", "table", "conclusions"):
    assert key in stored, key
  assert stored["seeds"] == [0, 1] and len(stored["runs"]) == 2 * 2 * 2
  assert {r["variant"] for r in stored["runs"]} == {"V", "NP"}
  for r in stored["runs"]:
    assert r["steps"] >= 1 and r["seconds"] >= 0.3
  for task, lo, hi in (("charlm", 1.0, 10.0), ("adding", 0.0, 5.0)):
    for v in ("V", "NP"):
      row = stored["table"][task][v]
      assert lo < row["metric"]["mean"] < hi and row["metric"]["std"] >= 0
      assert len(row["metric"]["per_seed"]) == 2
    assert stored["table"][task]["V"]["p_vs_vanilla"] is None
    p = stored["table"][task]["NP"]["p_vs_vanilla"]
    assert p is None or 0.0 <= p <= 1.0
  claims = {(c["task"], c["claim"]) for c in stored["conclusions"]}
  assert claims == {(t, "CIFG and NP do not hurt significantly") for t in ("charlm", "adding")}
  md = (tmp_path / "greff2017.md").read_text()
  assert "| NP | validation bits/char |" in md and "Welch" in md
  assert (tmp_path / "g.png").stat().st_size > 1000
  _no_paths(tmp_path / "greff2017.json", tmp_path / "greff2017.md")


def test_irnn_command_runs_at_a_seconds_long_size(tmp_path):
  argv = ["--steps", "6", "--seeds", "1", "--eval-every", "3", "--hidden", "4"]
  argv += ["--out", str(tmp_path), "--figure", str(tmp_path / "i.png")]
  _script("irnn").main(argv)
  stored = json.loads((tmp_path / "irnn.json").read_text())
  for key in ("paper", "command", "machine", "seeds", "settings", "paper_settings", "runs"):
    assert key in stored, key
  assert (
    stored["command"]
    == "python benchmarks/papers/irnn.py --steps 6 --seeds 1 --eval-every 3 --hidden 4"
  )
  assert math.isclose(stored["baseline"], 1 / 6) and stored["settings"]["T"] == 150
  assert sorted(r["model"] for r in stored["runs"]) == ["irnn", "tanh"]
  for r in stored["runs"]:
    assert [n for n, _ in r["curve"]] == [0, 3, 6]
    assert all(v is None or v > 0 for _, v in r["curve"]) and r["final_mse"] == r["curve"][-1][1]
  assert "IRNN learned" in stored["verdict"]
  assert "| 0 |" in (tmp_path / "irnn.md").read_text()
  assert (tmp_path / "i.png").stat().st_size > 1000
  _no_paths(tmp_path / "irnn.json", tmp_path / "irnn.md")


def test_stored_greff2017_has_every_variant_with_spreads():
  d = json.loads((STORED / "greff2017.json").read_text())
  assert len(d["seeds"]) >= 3
  for task in ("charlm", "adding"):
    assert sorted(d["table"][task]) == sorted(VARIANTS)
    runs = [r for r in d["runs"] if r["task"] == task]
    assert len(runs) == len(VARIANTS) * len(d["seeds"])
    # the same wall clock for every run (the loop overshoots by at most one step)
    assert all(d["seconds"] <= r["seconds"] < d["seconds"] + 5 for r in runs)
    for v, row in d["table"][task].items():
      assert len(row["metric"]["per_seed"]) == len(d["seeds"]) and row["metric"]["std"] > 0, v
  assert {c["claim"] for c in d["conclusions"]} == {
    "NFG and NOAF hurt most",
    "CIFG and NP do not hurt significantly",
  }
  assert (ROOT / "docs" / "figures" / "papers" / "greff2017.png").is_file()


def test_stored_irnn_reproduces_the_qualitative_result():
  d = json.loads((STORED / "irnn.json").read_text())
  assert len(d["seeds"]) >= 3 and d["settings"]["T"] == 150
  tanh = [r["final_mse"] for r in d["runs"] if r["model"] == "tanh"]
  irnn = [r["final_mse"] for r in d["runs"] if r["model"] == "irnn"]
  assert all(t is not None and t > 0.8 * d["baseline"] for t in tanh), tanh
  assert sum(i is not None and i < d["learned_threshold"] for i in irnn) >= 2, irnn
  assert (ROOT / "docs" / "figures" / "papers" / "irnn.png").is_file()


def test_reproductions_page_is_in_the_nav_with_its_tables_and_figures():
  assert "Reproductions: reproductions.md" in (ROOT / "mkdocs.yml").read_text()
  page = (ROOT / "docs" / "reproductions.md").read_text()
  for name in ("hmlstm_boundaries", "greff2017", "irnn"):
    assert f"<!-- table: {name} -->" in page
  for fig in ("figures/papers/greff2017.png", "figures/papers/irnn.png"):
    assert f"]({fig})" in page and (ROOT / "docs" / fig).is_file()
  rendered = tables.render(page)
  body = rendered.split("<!-- table: greff2017 -->")[1]
  assert [line.split(" | ")[0][2:] for line in body.splitlines()[3:12]] == VARIANTS
  assert rendered.count("Command: `python benchmarks/papers/") >= 2
  assert rendered.count("Seeds: [0, 1, 2") >= 2


HM = {
  "paper": "Chung, Ahn & Bengio 2017",
  "command": "rnnjax experiment boundaries --minutes 5",
  "machine": {"cpu": "Some CPU", "cores": 2, "backend": "cpu"},
  "seeds": [0, 1, 2],
  "f1": {"mean": 0.812, "std": 0.011, "per_seed": [0.8, 0.81, 0.826]},
  "precision": 0.7,
  "recall": {"mean": 0.97, "std": 0.01},
  "chance_f1": 0.454,
  "steps": 1234,
  "minutes": 5,
  "figure": "docs/figures/papers/hmlstm_f1.png",
}


def test_hmlstm_table_renders_whether_or_not_the_result_is_stored(tmp_path, monkeypatch):
  monkeypatch.setattr(tables, "RESULTS", tmp_path / "results")
  monkeypatch.setattr(tables, "ROOT", tmp_path)
  assert tables.hmlstm_boundaries().startswith("Not yet stored:")
  (tmp_path / "results" / "papers").mkdir(parents=True)
  (tmp_path / "results" / "papers" / "hmlstm_boundaries.json").write_text(json.dumps(HM))
  out = tables.hmlstm_boundaries()
  assert "| 0.812 ± 0.011 | 0.800, 0.810, 0.826 | 0.700 | 0.970 ± 0.010 | 0.454 | 1234 | 5 |" in out
  assert "Command: `rnnjax experiment boundaries --minutes 5`" in out and "Some CPU (2 cores" in out
  assert "hmlstm_f1.png" not in out  # the figure is shown only once it exists
  (tmp_path / "docs" / "figures" / "papers").mkdir(parents=True)
  (tmp_path / "docs" / "figures" / "papers" / "hmlstm_f1.png").write_bytes(b"png")
  assert "![HM-LSTM boundary F1](figures/papers/hmlstm_f1.png)" in tables.hmlstm_boundaries()


@pytest.mark.parametrize("name", ["greff2017", "irnn"])
def test_stored_markdown_names_command_machine_and_seeds(name):
  md = (STORED / f"{name}.md").read_text()
  assert f"python benchmarks/papers/{name}.py" in md and "Machine:" in md and "Seeds:" in md

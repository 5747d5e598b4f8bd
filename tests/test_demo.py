"""The main job: corpus, vocabulary, char-LM training, the CLI and its errors."""

import json
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.apps import charlm, cli, data, plot
from rnnjax.apps.models import char_lm
from tests.helpers import f64

FEATURES = {"in_quotes", "in_brackets", "indent", "column", "in_comment"}
# the pattern corpus has no strings and no comments: those features are
# constant, have no correlation, and are left out
PATTERN_FEATURES = {"in_brackets", "indent", "column"}


def test_stdlib_corpus_is_fixed_and_split():
  a = data.python_source_corpus(max_chars=60_000)
  b = data.python_source_corpus(max_chars=60_000)
  assert a == b
  assert len(a.train) == 60_000 and 0 < len(a.val) <= 6_000
  files = data.stdlib_files()
  assert files == sorted(files) and len(files) > 50
  # file 0 is held out, file 1 is the start of training
  assert a.val.startswith(files[0].read_text(encoding="utf-8", errors="replace")[:200])
  assert a.train.startswith(files[1].read_text(encoding="utf-8", errors="replace")[:200])


def test_vocab_round_trip_and_unknown():
  v = data.Vocab.from_text("hello world")
  assert v.chars[0] == data.UNK and v.size == 9
  np.testing.assert_array_equal(v.encode("hz"), [v.chars.index("h"), 0])
  assert v.decode(v.encode("hello")) == "hello"


def test_uniform_model_scores_log2_vocab(key):
  """Zero output weights give the uniform distribution: exactly log2(V) bits/char."""
  model = char_lm(11, 8, embed=4)
  p = model.init(key)
  p = f64(p._replace(out=p.out._replace(w=jnp.zeros_like(p.out.w))))  # exact in float64
  ids = np.random.default_rng(0).integers(0, 11, 2_000).astype(np.int32)
  assert charlm.evaluate_bpc(model, p, ids, batch=4, seq_len=16) == pytest.approx(
    math.log2(11), abs=1e-12
  )


def test_sampling_is_reproducible_and_in_vocab(key):
  model = char_lm(7, 8, embed=4)
  p = model.init(key)
  a = model.sample(p, jax.random.key(1), jnp.array([1, 2]), 30, 0.7)
  b = model.sample(p, jax.random.key(1), jnp.array([1, 2]), 30, 0.7)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (30,) and int(a.min()) >= 0 and int(a.max()) < 7


def _write_pattern_text(folder):
  rng = np.random.default_rng(0)
  words = ["def f(x):\n", "    return x\n", "class A:\n", "    pass\n"]
  text = "".join(words[i] for i in rng.integers(0, 4, 600))
  path = folder / "corpus.txt"
  path.write_text(text, encoding="utf-8")
  return path


@pytest.fixture
def pattern_text(tmp_path):
  return _write_pattern_text(tmp_path)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  """A 5-step demo run on the pattern corpus, its report included (the fast suite's run
  of the report; test_demo_learns_and_writes_summary checks one): its folder and corpus."""
  folder = tmp_path_factory.mktemp("tiny")
  text = _write_pattern_text(folder)
  run = folder / "run"
  args = [
    "--max-steps",
    "5",
    "--hidden",
    "16",
    "--batch",
    "4",
    "--seq-len",
    "16",
    "--sample-chars",
    "5",
  ]
  rc = cli.main(["demo", "--text", str(text), "--out", str(run), *args, "--no-progress"])
  assert rc == 0
  return run, text


def _record_loss_curves(monkeypatch):
  calls = []
  real = plot.loss_curve

  def loss_curve(*args, **kwargs):
    calls.append(kwargs)
    return real(*args, **kwargs)

  monkeypatch.setattr(plot, "loss_curve", loss_curve)
  return calls


def test_demo_learns_and_writes_summary(pattern_text, tmp_path, capsys, monkeypatch):
  curves = _record_loss_curves(monkeypatch)
  out = tmp_path / "run"
  rc = cli.main(
    [
      "demo",
      "--text",
      str(pattern_text),
      "--out",
      str(out),
      "--max-steps",
      "60",
      "--hidden",
      "32",
      "--batch",
      "8",
      "--seq-len",
      "32",
      "--sample-chars",
      "40",
      "--lr",
      "1e-2",
      "--no-progress",
    ]
  )
  assert rc == 0
  summary = json.loads((out / "summary.json").read_text())
  for k in ("val_bpc", "baseline_bpc", "steps", "train_seconds", "sample"):
    assert k in summary
  assert summary["steps"] == 60
  assert summary["baseline_bpc"] == pytest.approx(math.log2(summary["vocab_size"]), abs=1e-4)
  # a learnable pattern: far below the uniform baseline
  assert summary["val_bpc"] < 0.5 * summary["baseline_bpc"]
  assert summary["sample"].startswith("def ") and len(summary["sample"]) == 44
  printed = capsys.readouterr().out
  assert "bits/char" in printed and "uniform baseline" in printed
  assert not list(out.glob(".*.tmp"))
  # the report: BPC curve, sample, interpretable cells, embeddings, gradient flow
  md = (out / "report.md").read_text()
  for section in (
    "bits per character",
    "## Sample",
    "## Cells that track features",
    "## Character embeddings",
    "## Gradient flow of the trained LSTM",
  ):
    assert section in md
  for png in ("bpc.png", "embeddings.png", "step_norms.png", "products_by_lag.png"):
    assert (out / png).read_bytes()[:4] == b"\x89PNG"
  # bpc.png has the uniform baseline, log2(V)
  assert len(curves) == 1
  assert curves[0]["baseline"] == pytest.approx(summary["baseline_bpc"], abs=1e-4)
  assert curves[0]["baseline_label"] == f"uniform baseline log2(V={summary['vocab_size']})"
  # the verdict follows diagnose's rule from the evidence the report prints
  lam = float(re.search(r"Largest Lyapunov exponent ([-+.\d]+) per step", md).group(1))
  rate = float(re.search(r"between lags \d+ and \d+: ([-+.\d]+) per step", md).group(1))
  rule = "exploding" if lam > 0.01 or rate > 0.01 else "vanishing" if rate < -0.01 else "stable"
  assert summary["report"]["verdict"] == rule and f"Verdict **{rule}**" in md
  assert f"gradient flow of the trained LSTM: {summary['report']['verdict']}" in printed
  best = summary["report"]["best_cells"]
  assert set(best) == PATTERN_FEATURES
  for name, top in best.items():
    assert len(top) == 1 and 0 <= top[0]["cell"] < 32 and 0 < abs(top[0]["r"]) <= 1
    assert f"| {name} | {top[0]['cell']} | {top[0]['r']:+.3f} |" in md
    assert f"  {name:12s} cell {top[0]['cell']:4d}  r = {top[0]['r']:+.3f}" in printed
    assert (out / f"cell_{name}.png").read_bytes()[:4] == b"\x89PNG"
  page = (out / "visualize.html").read_text(encoding="utf-8")
  assert "Pearson correlation" in page and "blue negative, white 0, red positive" in page
  assert f"report: {out / 'report.md'}" in printed


def test_cli_experiment(tmp_path, capsys):
  js = tmp_path / "adding.json"
  args = ["--cell", "gru", "--T", "8", "--hidden", "16", "--steps", "30"]
  assert cli.main(["experiment", "adding", *args, "--json", str(js), "--no-progress"]) == 0
  r = json.loads(js.read_text())
  assert {"loss_curve", "final_test_loss", "baseline"} <= set(r) and r["baseline"] == 1 / 6
  assert r["steps"] == 30 and "params" not in r
  out = capsys.readouterr().out
  assert "adding T=8, gru: 30 steps in" in out
  assert f"test loss {r['final_test_loss']:.4f} vs baseline 0.1667" in out


def test_cli_visualize(tiny_run, tmp_path, capsys):
  run, text = tiny_run
  out = tmp_path / "vis"
  args = ["visualize", "--run", str(run), "--text", str(text), "--chars", "400"]
  assert cli.main([*args, "--out", str(out)]) == 0
  printed = capsys.readouterr().out.splitlines()
  features = json.loads((out / "features.json").read_text())
  assert set(features) == PATTERN_FEATURES
  for name, top in features.items():
    assert len(top) == 3 and len({c["cell"] for c in top}) == 3
    assert all(0 <= c["cell"] < 16 and abs(c["r"]) <= 1 for c in top)
    line = f"{name:12s} " + "  ".join(f"cell {c['cell']:4d} r={c['r']:+.3f}" for c in top)
    assert line in printed
  best = {top[0]["cell"] for top in features.values()}
  assert printed[-1] == f"wrote {out / 'visualize.html'}, features.json and 3 PNGs"
  assert sorted(p.name for p in out.glob("*.png")) == sorted(f"cell_{k}.png" for k in best)
  page = (out / "visualize.html").read_text(encoding="utf-8")
  assert page.count("<span style=") == 400 * len(features)
  assert "over the 400 characters of text on this page" in page
  # one chosen cell: no r to explain
  assert cli.main([*args, "--out", str(tmp_path / "one"), "--cell", "3"]) == 0
  page = (tmp_path / "one" / "visualize.html").read_text(encoding="utf-8")
  assert "<h2>chosen with --cell: cell 3</h2>" in page and "Pearson" not in page
  assert page.count("<span style=") == 400
  capsys.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.main([*args, "--cell", "99"])
  assert e.value.code == 2
  assert "--cell 99 is out of range: the model has 16 cells" in capsys.readouterr().err


def test_generate_rejects_a_prime_outside_the_vocabulary(tiny_run, capsys):
  run, _ = tiny_run
  with pytest.raises(SystemExit) as e:
    cli.main(["generate", "--run", str(run), "--prime", "déf Z", "--chars", "5"])
  assert e.value.code == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  assert captured.err.startswith(
    "rnnjax generate: error: prime has characters the model never saw: ['Z', 'é']"
  )
  assert cli.main(["generate", "--run", str(run), "--prime", "def ", "--chars", "5"]) == 0
  assert capsys.readouterr().out.startswith("def ")


@pytest.mark.parametrize(
  ("content", "message"),
  [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"short text", "10 characters is too short"),
    (b"\x00\x01\x02" * 1000, "looks like a binary file"),
    (b"\xff\xfe\xfa" * 1000, "not UTF-8 text"),
  ],
)
def test_bad_text_files(tmp_path, content, message, capsys):
  path = tmp_path / "t.txt"
  if content is not None:
    path.write_bytes(content)
  with pytest.raises(ValueError, match=message):
    data.text_corpus(path)
  with pytest.raises(SystemExit) as e:
    cli.main(["demo", "--text", str(path), "--max-steps", "1"])
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_every_subcommand_has_help(capsys):
  for cmd in ("demo", "train", "generate", "experiment", "visualize", "jacobian"):
    with pytest.raises(SystemExit) as e:
      cli.main([cmd, "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith("usage: rnnjax " + cmd) and "(default" in help_text


def test_cli_rejects_bad_arguments(capsys):
  with pytest.raises(SystemExit) as e:
    cli.main(["demo", "--minutes", "-1"])
  assert e.value.code == 2
  assert "expected a number > 0, got -1" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    cli.main(["nonsense"])
  assert e.value.code == 2
  assert "invalid choice: 'nonsense'" in capsys.readouterr().err

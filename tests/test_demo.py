"""The main job: corpus, vocabulary, char-LM training, the CLI and its errors."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.apps import charlm, cli, data
from rnnjax.apps.models import char_lm


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
  p = p._replace(out=p.out._replace(w=jnp.zeros_like(p.out.w)))
  ids = np.random.default_rng(0).integers(0, 11, 2_000).astype(np.int32)
  assert charlm.evaluate_bpc(model, p, ids, batch=4, seq_len=16) == pytest.approx(
    math.log2(11), abs=1e-6
  )


def test_sampling_is_reproducible_and_in_vocab(key):
  model = char_lm(7, 8, embed=4)
  p = model.init(key)
  a = model.sample(p, jax.random.key(1), jnp.array([1, 2]), 30, 0.7)
  b = model.sample(p, jax.random.key(1), jnp.array([1, 2]), 30, 0.7)
  np.testing.assert_array_equal(a, b)
  assert a.shape == (30,) and int(a.min()) >= 0 and int(a.max()) < 7


@pytest.fixture
def pattern_text(tmp_path):
  rng = np.random.default_rng(0)
  words = ["def f(x):\n", "    return x\n", "class A:\n", "    pass\n"]
  text = "".join(words[i] for i in rng.integers(0, 4, 600))
  path = tmp_path / "corpus.txt"
  path.write_text(text, encoding="utf-8")
  return path


def test_demo_learns_and_writes_summary(pattern_text, tmp_path, capsys):
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
  assert summary["report"]["verdict"] in ("vanishing", "stable", "exploding")
  assert set(summary["report"]["best_cells"]) <= {
    "in_quotes",
    "in_brackets",
    "indent",
    "column",
    "in_comment",
  }
  assert "report: " in printed


def test_cli_experiment_and_visualize(pattern_text, tmp_path, capsys):
  js = tmp_path / "adding.json"
  assert (
    cli.main(
      [
        "experiment",
        "adding",
        "--cell",
        "gru",
        "--T",
        "8",
        "--hidden",
        "16",
        "--steps",
        "30",
        "--json",
        str(js),
        "--no-progress",
      ]
    )
    == 0
  )
  r = json.loads(js.read_text())
  assert {"loss_curve", "final_test_loss", "baseline"} <= set(r) and r["baseline"] == 1 / 6
  assert "vs baseline 0.1667" in capsys.readouterr().out
  run = tmp_path / "run"
  cli.main(
    [
      "demo",
      "--text",
      str(pattern_text),
      "--out",
      str(run),
      "--max-steps",
      "5",
      "--hidden",
      "16",
      "--batch",
      "4",
      "--seq-len",
      "16",
      "--no-progress",
      "--no-report",
    ]
  )
  capsys.readouterr()
  assert (
    cli.main(["visualize", "--run", str(run), "--text", str(pattern_text), "--chars", "400"]) == 0
  )
  out = capsys.readouterr().out
  assert "in_quotes" not in out or "cell" in out
  assert (run / "visualize" / "visualize.html").exists()
  assert json.loads((run / "visualize" / "features.json").read_text())
  with pytest.raises(SystemExit):
    cli.main(["visualize", "--run", str(run), "--text", str(pattern_text), "--cell", "99"])
  assert "--cell 99 is out of range: the model has 16 cells" in capsys.readouterr().err


@pytest.mark.parametrize(
  "content,message",
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
    assert "usage: rnnjax " + cmd in capsys.readouterr().out


def test_cli_rejects_bad_arguments(capsys):
  with pytest.raises(SystemExit):
    cli.main(["demo", "--minutes", "-1"])
  assert "expected a number > 0, got -1" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    cli.main(["nonsense"])
  assert "invalid choice" in capsys.readouterr().err

"""Training runs researchers can trust: atomic checkpoints, exact resume after
a kill, clear errors for damaged or mismatched checkpoints, metrics and plots."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from rnnjax.apps import charlm, checkpoint, cli, plot
from rnnjax.apps.models import char_lm

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
  "--hidden",
  "16",
  "--batch",
  "4",
  "--seq-len",
  "16",
  "--log-every",
  "5",
  "--checkpoint-every",
  "10",
  "--no-progress",
  "--lr",
  "1e-2",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  rng = np.random.default_rng(1)
  words = ["for i in range(n):\n", "    x += i\n", "if x:\n", "    print(x)\n", "# note\n"]
  path = tmp_path_factory.mktemp("c") / "corpus.txt"
  path.write_text("".join(words[i] for i in rng.integers(0, 5, 3000)), encoding="utf-8")
  return path


def _metrics(out):
  return [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]


loss_curves: list[dict] = []  # plot.loss_curve's keyword arguments in the uninterrupted run


@pytest.fixture(scope="module")
def uninterrupted(corpus, tmp_path_factory):
  out = tmp_path_factory.mktemp("full")
  real = plot.loss_curve

  def loss_curve(*args, **kwargs):
    loss_curves.append(kwargs)
    return real(*args, **kwargs)

  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(plot, "loss_curve", loss_curve)
    assert (
      cli.main(["train", "--text", str(corpus), "--steps", "300", "--out", str(out), *SMALL]) == 0
    )
  return out


def test_run_writes_checkpoint_metrics_and_plot(uninterrupted):
  rows = _metrics(uninterrupted)
  assert [r["step"] for r in rows] == [1, *range(5, 301, 5)]
  assert all(r["grad_norm"] > 0 and np.isfinite(r["grad_norm"]) for r in rows)
  assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
  assert (uninterrupted / "bpc.png").stat().st_size > 1000
  summary = json.loads((uninterrupted / "summary.json").read_text())
  assert summary["steps"] == 300 and summary["val_bpc"] < summary["baseline_bpc"]
  # bpc.png draws the uniform baseline log2(V)
  vocab_size = len(checkpoint.read_meta(uninterrupted / "checkpoint.ckpt")["vocab"])
  assert summary["baseline_bpc"] == pytest.approx(np.log2(vocab_size))
  assert loss_curves == [
    dict(baseline=summary["baseline_bpc"], baseline_label=f"uniform baseline log2(V={vocab_size})")
  ]
  assert checkpoint.read_meta(uninterrupted / "checkpoint.ckpt")["train"]["max_steps"] == 300
  assert not list(uninterrupted.glob(".*.tmp"))


def test_killed_run_resumes_to_the_same_loss_curve(corpus, uninterrupted, tmp_path):
  out = tmp_path / "killed"
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "rnnjax",
      "train",
      "--text",
      str(corpus),
      "--steps",
      "300",
      "--out",
      str(out),
      *SMALL,
    ],
    env=env,
    stdout=subprocess.DEVNULL,
    stderr=subprocess.DEVNULL,
  )
  deadline = time.time() + 120
  while time.time() < deadline:
    if (out / "checkpoint.ckpt").exists() and (out / "metrics.jsonl").exists():
      rows = (out / "metrics.jsonl").read_text().splitlines()
      if len(rows) >= 6:
        break
    time.sleep(0.02)
  assert proc.poll() is None, "the run finished before it could be killed"
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert checkpoint.read_meta(out / "checkpoint.ckpt")["train"]["max_steps"] == 300
  assert _metrics(out)[-1]["step"] < 300
  resume = ["train", "--text", str(corpus), "--steps", "300", "--out", str(out), "--resume"]
  assert cli.main([*resume, *SMALL]) == 0
  resumed, full = _metrics(out), _metrics(uninterrupted)
  assert [r["step"] for r in resumed] == [r["step"] for r in full]
  assert [r["loss"] for r in resumed] == [r["loss"] for r in full]  # exactly
  assert [r["grad_norm"] for r in resumed] == [r["grad_norm"] for r in full]


def test_corrupted_checkpoint_is_a_clear_error(corpus, uninterrupted, tmp_path, capsys):
  out = tmp_path / "bad"
  out.mkdir()
  data = bytearray((uninterrupted / "checkpoint.ckpt").read_bytes())
  data[len(data) // 2] ^= 0xFF
  (out / "checkpoint.ckpt").write_bytes(bytes(data))
  with pytest.raises(SystemExit) as e:
    cli.main(
      ["train", "--text", str(corpus), "--steps", "300", "--out", str(out), "--resume", *SMALL]
    )
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert f"checkpoint {out / 'checkpoint.ckpt'} is corrupted" in err
  (out / "checkpoint.ckpt").write_bytes(bytes(data[:50]))
  with pytest.raises(checkpoint.CheckpointError, match="is corrupted"):
    checkpoint.read_meta(out / "checkpoint.ckpt")
  with pytest.raises(checkpoint.CheckpointError, match="no such file"):
    checkpoint.read_meta(out / "missing.ckpt")


def test_mismatched_checkpoint_names_what_differs(corpus, uninterrupted, tmp_path, capsys):
  out = tmp_path / "other"
  out.mkdir()
  (out / "checkpoint.ckpt").write_bytes((uninterrupted / "checkpoint.ckpt").read_bytes())
  args = ["train", "--text", str(corpus), "--steps", "300", "--out", str(out), "--resume"]
  with pytest.raises(SystemExit) as e:
    cli.main(args + [a if a != "16" else "24" for a in SMALL])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert (
    "does not match the model" in err
    and "file has float32[16, 64], model expects float32[24, 96]" in err
  )
  with pytest.raises(SystemExit) as e:
    cli.main([*args, *SMALL[:-2], "--lr", "3e-3"])
  assert e.value.code == 2
  err = capsys.readouterr().err
  assert "was written by a different run" in err and "'lr': 0.01" in err


def test_generate_from_a_run(uninterrupted, capsys):
  args = ["generate", "--run", str(uninterrupted), "--prime", "for ", "--chars", "30"]
  assert cli.main([*args, "--seed", "3"]) == 0
  text = capsys.readouterr().out
  model, params, vocab, _ = charlm.restore_model(uninterrupted)
  expected = charlm.generate(model, params, vocab, "for ", 30, 0.8, 3)
  assert len(expected) == 34 and text == expected + "\n"
  assert charlm.generate(model, params, vocab, "for ", 30, 0.8, 4) != expected  # seeded


def test_regularised_training_is_reproducible_and_off_at_evaluation(corpus, tmp_path):
  """--dropout and --weight-drop draw their masks from the run's key and the step:
  two runs agree exactly; without a key (evaluation) the model is the plain one."""
  args = [
    "train",
    "--text",
    str(corpus),
    "--steps",
    "12",
    "--dropout",
    "0.2",
    "--weight-drop",
    "0.3",
    "--zoneout",
    "0.1",
    *SMALL,
  ]
  for name in ("a", "b"):
    assert cli.main([*args, "--out", str(tmp_path / name)]) == 0

  def curve(name):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in _metrics(tmp_path / name)]

  assert curve("a") == curve("b") and len(curve("a")) == 3
  model, params, vocab, meta = charlm.restore_model(tmp_path / "a")
  assert meta["model"]["dropout"] == 0.2 and meta["model"]["weight_drop"] == 0.3
  assert meta["model"]["zoneout"] == 0.1
  ids = jax.numpy.asarray(vocab.encode("for i in range(n):\n"))[:, None]
  _, plain = model.apply(params, ids)
  _, train1 = model.apply(params, ids, key=jax.random.key(1))
  _, train2 = model.apply(params, ids, key=jax.random.key(2))
  assert not np.allclose(train1, plain) and not np.allclose(train1, train2)
  plain_model = char_lm(**{**meta["model"], "dropout": 0.0, "weight_drop": 0.0})
  np.testing.assert_allclose(plain, plain_model.apply(params, ids)[1], rtol=1e-6)
  no_zoneout = char_lm(**{**meta["model"], "zoneout": 0.0})  # zoneout evaluates at E[mask]
  assert not np.allclose(plain, no_zoneout.apply(params, ids)[1])
  with pytest.raises(SystemExit) as e:
    cli.main([*args[: -len(SMALL)], "--dropout", "1.5", "--out", str(tmp_path / "c")])
  assert e.value.code == 2

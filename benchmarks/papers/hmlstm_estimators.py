"""Issue 26: the HM-LSTM's two boundary estimators, straight-through against REINFORCE.

Computes what notebook 04 draws (the notebook only reads the stored result):

* **F1 over training**: `rnnjax experiment boundaries`'s setting (its defaults,
  the boundary-rate term included) trained with each estimator for the same
  step budget, level 1's boundary F1 scored during training (``--f1-curve``);
* **gradient variance**: at the params of a straight-through run, the gradient
  of the training loss over ``DRAWS`` minibatches (and, for REINFORCE, noise
  draws), per estimator: the total variance ``tr Cov[g]`` and the
  signal-to-noise ratio ``|E g|² / tr Cov[g]``, for the boundary detector's
  parameters (the ``z̃`` column of level 1) and for all parameters. The two
  estimators' means differ too (straight-through is biased), so the table gives
  the cosine between them.

Writes benchmarks/results/papers/hmlstm_estimators.json.

    python benchmarks/papers/hmlstm_estimators.py                 # about 15 minutes, loaded
    python benchmarks/papers/hmlstm_estimators.py --steps 3 --draws 2 --out /tmp/x   # seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax.apps import boundaries, charlm, io
from rnnjax.apps.data import Vocab, stream_batches
from rnnjax.apps.models.lm import char_lm

ESTIMATORS = ("straight_through", "reinforce")
STEPS = 3000  # the training budget of each F1 run
VARIANCE_AT = 1000  # the straight-through steps before the gradients are drawn
DRAWS = 64  # gradients per estimator
OUT = Path(__file__).resolve().parents[1] / "results" / "papers"


def detector(grads: Any) -> jnp.ndarray:
  """The boundary detector's gradient: the ``z̃`` column of level 1's weights and bias."""
  p = grads.rnn[0].layers[0]
  return jnp.concatenate([p.w_below[:, -1], p.w_rec[:, -1], p.w_above[:, -1], p.b[-1:]])


def flat(grads: Any) -> jnp.ndarray:
  return jnp.concatenate([jnp.ravel(g) for g in jax.tree.leaves(grads)])


def moments(g: np.ndarray) -> dict[str, float]:
  """``g: [draws, n]`` -> total variance, squared mean norm, their ratio."""
  mean = g.mean(0)
  var = float(g.var(0, ddof=1).sum())
  return dict(
    total_variance=var,
    mean_norm_sq=float(mean @ mean),
    snr=float(mean @ mean) / var if var else float("inf"),
  )


def gradient_variance(steps: int, draws: int, penalty: float, seed: int = 0) -> dict[str, Any]:
  d = dict(boundaries.DEFAULTS, boundary_penalty=penalty)
  corpus, _ = boundaries.word_corpus(seed=seed)
  run = charlm.train_char_lm(
    corpus,
    charlm.ModelConfig(
      hidden=d["hidden"],
      embed=32,
      layers=d["layers"],
      cell="hmlstm",
      a_steps=d["a_steps"],
      boundary_penalty=d["boundary_penalty"],
    ),
    charlm.TrainConfig(
      batch=d["batch"], seq_len=d["seq_len"], lr=d["lr"], minutes=0, max_steps=steps, seed=seed
    ),
    progress=False,
  )
  ids = Vocab.from_text(corpus.train).encode(corpus.train)
  windows = stream_batches(ids, d["batch"], d["seq_len"], forever=False)
  rng = np.random.default_rng(seed)
  picks = rng.choice(windows.count, draws, replace=False)
  out: dict[str, Any] = dict(after_steps=steps, draws=draws)
  means = {}
  for est in ESTIMATORS:
    model = char_lm(
      run.model.vocab_size,
      d["hidden"],
      embed=32,
      layers=d["layers"],
      cell="hmlstm",
      a_schedule=dict(run.model.cells[0].options)["a_schedule"],
      boundary_penalty=d["boundary_penalty"],
      boundary_estimator=est,
    )

    @jax.jit
    def grad(params: Any, x: Any, y: Any, key: Any, model: Any = model) -> Any:
      g = jax.grad(lambda p: model.loss(p, x, y, None, key)[0])(params)
      return detector(g), flat(g)

    det, full = [], []
    for k, w in enumerate(picks):
      x, y = windows(int(w))
      gd, gf = grad(run.params, jnp.asarray(x), jnp.asarray(y), jax.random.key(k))
      det.append(np.asarray(gd, np.float64))
      full.append(np.asarray(gf, np.float64))
    det_a, full_a = np.stack(det), np.stack(full)
    means[est] = (det_a.mean(0), full_a.mean(0))
    out[est] = dict(detector=moments(det_a), all=moments(full_a))

  def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))

  out["cosine_of_means"] = dict(
    detector=cosine(means[ESTIMATORS[0]][0], means[ESTIMATORS[1]][0]),
    all=cosine(means[ESTIMATORS[0]][1], means[ESTIMATORS[1]][1]),
  )
  return out


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=STEPS)
  parser.add_argument("--variance-at", type=int, default=VARIANCE_AT)
  parser.add_argument("--draws", type=int, default=DRAWS)
  parser.add_argument(
    "--boundary-penalty", type=float, default=boundaries.DEFAULTS["boundary_penalty"]
  )
  parser.add_argument("--out", type=Path, default=OUT)
  args = parser.parse_args(argv)
  t0 = time.time()
  result: dict[str, Any] = dict(
    command=f"python benchmarks/papers/hmlstm_estimators.py --steps {args.steps} "
    f"--variance-at {args.variance_at} --draws {args.draws} "
    f"--boundary-penalty {args.boundary_penalty}",
    machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, {platform.system()}, shared",
    setting="rnnjax experiment boundaries's defaults with a step budget",
    defaults={
      **{k: v for k, v in boundaries.DEFAULTS.items() if k != "minutes"},
      "boundary_penalty": args.boundary_penalty,
    },
  )
  result["variance"] = gradient_variance(args.variance_at, args.draws, args.boundary_penalty)
  print("variance:", result["variance"], flush=True)
  runs = {}
  for est in ESTIMATORS:
    r = boundaries.run_boundaries(
      steps=args.steps,
      estimator=est,
      boundary_penalty=args.boundary_penalty,
      f1_curve=True,
      progress=False,
    )
    runs[est] = dict(
      boundary_f1=r["boundary_f1"],
      precision=r["precision"],
      recall=r["recall"],
      chance_f1=r["chance_f1"],
      boundary_rate=r["boundary_rate"][0],
      val_bpc=r["val_bpc"],
      steps=r["steps"],
      train_seconds=r["train_seconds"],
      load_average=r["load_average"],
      f1_curve=r["f1_curve"],
      loss_curve=r["loss_curve"],
    )
    print(est, {k: v for k, v in runs[est].items() if "curve" not in k}, flush=True)
  result["training"] = runs
  result["seconds"] = round(time.time() - t0, 1)
  io.write_json(args.out / "hmlstm_estimators.json", result)
  return 0


if __name__ == "__main__":
  sys.exit(main())

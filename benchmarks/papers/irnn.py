"""Le, Jaitly & Hinton 2015, "A simple way to initialize recurrent networks of rectified
linear units": on the adding problem at T = 150 the IRNN (ReLU, identity recurrent
weights) learns, where a tanh RNN with small Gaussian recurrent weights stays at the
baseline (predicting the mean, MSE 1/6).

Both models are `rnnjax.elman` cells (H = 100) with a linear readout of the last
hidden state, trained for the same number of steps on fresh batches of
`rnnjax.tasks.adding`; the test MSE on a fixed set of 1000 sequences is logged every
``--eval-every`` steps. Runs are interleaved seed-major (seed 0 of both models, then
seed 1, ...).

    python benchmarks/papers/irnn.py --steps 8000 --seeds 3

Writes ``irnn.json`` and ``irnn.md`` to ``--out`` (default ``benchmarks/results/papers``)
and the loss curves to ``--figure``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tables
from paper_common import machine, machine_line, summary

import rnnjax as rj
from rnnjax.apps import io

ROOT = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------ configuration
T = 150
HIDDEN = 100  # the paper's 100 units
BATCH = 16  # the paper's minibatch
LR = 1e-3  # Adam; the paper: SGD, learning rate from a small grid
CLIP = 1.0  # global-norm clipping (the paper clipped gradients too)
INIT_STD = 1e-3  # the small Gaussian of the paper's tanh RNN (and of the input weights here)
TEST = 1000
LEARNED = 0.05  # "learned": final test MSE below this (a third of the 1/6 baseline ~ 0.167)

PAPER = dict(
  hidden=100,
  batch=16,
  optimizer="SGD, learning rate and clipping chosen from a small grid",
  steps="up to about 10^6 (T = 150 needs far fewer for the IRNN)",
  finding="IRNN reaches near-zero MSE at T = 150 (as does the LSTM); the tanh RNN stays at "
  "the baseline MSE of about 0.17",
)
MODELS = ("irnn", "tanh")


def make_cell(model: str, H: int) -> rj.Cell:
  """IRNN: ReLU, ``w_h = I``; tanh: ``w_h ~ N(0, INIT_STD²)``; both ``w_x ~ N(0, INIT_STD²)``."""
  w_x = rj.init.gaussian(INIT_STD * math.sqrt(2))  # fan_in 2: std INIT_STD
  if model == "irnn":
    return rj.elman(H, "relu", input_init=w_x, recurrent_init=rj.init.identity())
  return rj.elman(
    H, "tanh", input_init=w_x, recurrent_init=rj.init.gaussian(INIT_STD * math.sqrt(H))
  )


def loss(cell: rj.Cell, p: dict[str, Any], xs: jax.Array, targets: jax.Array) -> jax.Array:
  _, hs = rj.scan(cell, p["cell"], xs)  # [T, B, H]
  pred = (hs[-1] @ p["w_o"])[:, 0] + p["b_o"][0]  # [B]
  return jnp.mean((pred - targets) ** 2)


_COMPILED: dict[tuple[str, int], Any] = {}


def _compiled(model: str, H: int, test: Any) -> Any:
  """The jitted training step and test loss of a model, shared by its seeds."""
  if (model, H) not in _COMPILED:
    cell = make_cell(model, H)
    opt = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))

    @jax.jit
    def step(p, s, key):
      xs, targets = rj.tasks.adding(key, BATCH, T)
      value, g = jax.value_and_grad(lambda q: loss(cell, q, xs, targets))(p)
      u, s = opt.update(g, s, p)
      return optax.apply_updates(p, u), s, value

    _COMPILED[model, H] = step, jax.jit(lambda p: loss(cell, p, *test))
  return _COMPILED[model, H]


def run(model: str, seed: int, steps: int, every: int, H: int, test: Any) -> dict[str, Any]:
  cell = make_cell(model, H)
  kc, ko, kd = jax.random.split(jax.random.key(seed), 3)
  params = dict(
    cell=cell.init(kc, 2),
    w_o=INIT_STD * jax.random.normal(ko, (H, 1)),
    b_o=jnp.zeros((1,)),
  )
  opt = optax.chain(optax.clip_by_global_norm(CLIP), optax.adam(LR))
  state = opt.init(params)

  step, evaluate = _compiled(model, H, test)
  curve = [[0, float(evaluate(params))]]
  start = time.perf_counter()
  for n in range(1, steps + 1):
    params, state, _ = step(params, state, jax.random.fold_in(kd, n))
    if n % every == 0 or n == steps:
      mse = float(evaluate(params))
      curve.append([n, mse if math.isfinite(mse) else None])
  final = curve[-1][1]
  return dict(
    model=model,
    seed=seed,
    steps=steps,
    seconds=time.perf_counter() - start,
    final_mse=final,
    learned=final is not None and final < LEARNED,
    curve=curve,
  )


def markdown(result: dict[str, Any]) -> str:
  m = result["machine"]
  s = result["settings"]
  lines = [
    "# Le, Jaitly & Hinton 2015, IRNN on the adding problem",
    "",
    f"Command: `{result['command']}`. Machine: {machine_line(m)}. Seeds: {result['seeds']}. "
    f"Adding problem T = {s['T']}, H = {s['hidden']}, batch {s['batch']}, {result['steps']} "
    f"steps of Adam (lr {s['lr']:g}, global-norm clip {s['clip']:g}); test MSE on "
    f"{s['test']} fixed sequences; baseline (predict the mean) {result['baseline']:.3f}.",
    "",
    "| seed | IRNN final test MSE | tanh RNN final test MSE |",
    "|---:|---:|---:|",
  ]
  by = {(r["model"], r["seed"]): r for r in result["runs"]}

  def cell(r: dict[str, Any]) -> str:
    return "diverged" if r["final_mse"] is None else f"{r['final_mse']:.4f}"

  for seed in result["seeds"]:
    lines.append(f"| {seed} | {cell(by['irnn', seed])} | {cell(by['tanh', seed])} |")
  sm = result["summary"]

  def spread(s: dict[str, Any] | None) -> str:
    return "–" if s is None else f"{s['mean']:.4f} ± {s['std']:.4f}"

  lines.append(f"| mean ± std | {spread(sm['irnn'])} | {spread(sm['tanh'])} |")
  lines += [
    "",
    f"Paper: {PAPER['finding']}. Paper's settings: {PAPER['hidden']} units, batch "
    f"{PAPER['batch']}, {PAPER['optimizer']}, {PAPER['steps']}.",
    f"Deviations: {result['deviations']}",
    "",
    f"Result: {result['verdict']}",
    "",
  ]
  return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=8000)
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--eval-every", type=int, default=250)
  ap.add_argument("--hidden", type=int, default=HIDDEN)
  ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "papers")
  ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "papers" / "irnn.png")
  args = ap.parse_args(argv)
  test = tuple(rj.tasks.adding(jax.random.key(10_000), TEST, T))
  runs = []
  t0 = time.perf_counter()
  for seed in range(args.seeds):
    for model in MODELS:
      r = run(model, seed, args.steps, args.eval_every, args.hidden, test)
      runs.append(r)
      took = time.perf_counter() - t0
      print(f"[{took:7.1f}s] {model} seed {seed}: {r['final_mse']}", flush=True)
  baseline = rj.tasks.adding_baseline(T)

  def finals(model: str) -> list[float]:
    return [r["final_mse"] for r in runs if r["model"] == model and r["final_mse"] is not None]

  irnn_ok = sum(r["learned"] for r in runs if r["model"] == "irnn")
  tanh_base = sum(
    r["final_mse"] is not None and r["final_mse"] > 0.8 * baseline
    for r in runs
    if r["model"] == "tanh"
  )
  n = args.seeds
  command = f"python benchmarks/papers/irnn.py --steps {args.steps} --seeds {n}"
  if args.eval_every != 250:
    command += f" --eval-every {args.eval_every}"
  if args.hidden != HIDDEN:
    command += f" --hidden {args.hidden}"
  result = dict(
    paper="Le, Jaitly & Hinton, A simple way to initialize recurrent networks of rectified "
    "linear units, arXiv:1504.00941, 2015",
    command=command,
    machine=machine(),
    seeds=list(range(n)),
    steps=args.steps,
    baseline=baseline,
    settings=dict(
      T=T, hidden=args.hidden, batch=BATCH, lr=LR, clip=CLIP, init_std=INIT_STD, test=TEST
    ),
    paper_settings=PAPER,
    deviations=(
      f"Adam (lr {LR:g}) instead of SGD; {args.steps} steps, far fewer than the paper's; "
      f"global-norm clipping at {CLIP:g}; fresh random batches instead of a fixed training set; "
      f"the readout and input weights N(0, {INIT_STD:g}²)."
    ),
    runs=runs,
    summary={m: summary(finals(m)) if finals(m) else None for m in MODELS},
    diverged={m: sum(r["final_mse"] is None for r in runs if r["model"] == m) for m in MODELS},
    learned_threshold=LEARNED,
    verdict=(
      f"IRNN learned (final test MSE < {LEARNED:g}) in {irnn_ok} of {n} seeds; the tanh RNN "
      f"stayed at the baseline (final test MSE above 0.8 x {baseline:.3f}) in {tanh_base} of "
      f"{n} seeds."
    ),
  )
  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / "irnn.json", result)
  io.atomic_write_text(args.out / "irnn.md", markdown(result))
  tables.chart_irnn(result, args.figure)
  print(markdown(result))
  return result


if __name__ == "__main__":
  main()

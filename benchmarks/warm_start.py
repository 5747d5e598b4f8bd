"""The warm start of `rj.parallel_scan`, measured in training (the ParaRNN trick).

A GRU regressor is trained on the adding problem with its forward evaluated by
`rj.parallel_scan` (gradients by the parallel adjoint). The data are ``--batches``
fixed batches seen in turn for ``--epochs`` epochs. Two runs from the same
initialisation, trained in lockstep (a step of one, then of the other, so the
machine's load falls on both alike), differ only in the initial guess of each
solve:

- cold: zeros, every step;
- warm: the trajectory the solver returned the last time it saw the same batch
  (`ParallelInfo.trajectory`, under ``stop_gradient``), one epoch of optimizer
  steps ago. The first epoch has nothing to reuse and starts from zeros.

Both runs converge to the same tolerance at every step, so their losses agree to
that tolerance (the table reports the largest difference). The table gives the
Newton iterations per step and the wall time per training step (medians over
the epochs after the first), for quasi-DEER and DEER. One process, one machine;
JSON and markdown go to ``--out`` (default ``benchmarks/results``).

    python benchmarks/warm_start.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax.apps import io


def run(method: str, args: argparse.Namespace) -> dict:
  """Train the cold and the warm run in lockstep (one step of each in turn, so the
  machine's load falls on both alike) and return both records."""
  cell = rj.gru(args.H)
  key_cell, key_head, key_data = jax.random.split(jax.random.key(args.seed), 3)
  params = {
    "cell": cell.init(key_cell, 2),
    "head": 0.1 * jax.random.normal(key_head, (args.H,)),
  }
  data = [rj.tasks.adding(k, args.B, args.T) for k in jax.random.split(key_data, args.batches)]
  opt = optax.adam(args.lr)

  @jax.jit
  def train_step(params, opt_state, xs, targets, init):
    def loss(p):
      carry, _, info = rj.parallel_scan(
        cell, p["cell"], xs, method=method, init=init, max_iters=args.max_iters
      )
      return jnp.mean((carry @ p["head"] - targets) ** 2), info

    (value, info), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt_state = opt.update(grads, opt_state)
    trajectory = jax.lax.stop_gradient(info.trajectory)
    return optax.apply_updates(params, updates), opt_state, value, info, trajectory

  zeros = jnp.zeros((args.T, args.B, args.H))
  runs = {
    name: dict(
      state=(params, opt.init(params)),
      cache=[zeros] * args.batches,
      losses=[],
      iterations=[],
      times=[],
      fell_back=0,
    )
    for name in ("cold", "warm")
  }
  jax.block_until_ready(train_step(params, opt.init(params), *data[0], zeros))  # compile
  for _ in range(args.epochs):
    for b, (xs, targets) in enumerate(data):
      for name, r in runs.items():
        init = r["cache"][b] if name == "warm" else zeros
        t0 = time.perf_counter()
        p, o, value, info, trajectory = jax.block_until_ready(
          train_step(*r["state"], xs, targets, init)
        )
        r["times"].append(time.perf_counter() - t0)
        r["state"], r["cache"][b] = (p, o), trajectory
        r["losses"].append(float(value))
        r["iterations"].append(int(info.iterations))
        r["fell_back"] += int(info.fell_back)
  later = slice(args.batches, None)  # epochs 2.., where a warm start exists
  out = {}
  for name, r in runs.items():
    del r["state"], r["cache"]
    r["median_iterations"] = statistics.median(r["iterations"][later])
    r["median_step_ms"] = 1e3 * statistics.median(r["times"][later])
    out[name] = r
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--T", type=int, default=1000)
  ap.add_argument("--B", type=int, default=16)
  ap.add_argument("--H", type=int, default=32)
  ap.add_argument("--batches", type=int, default=4)
  ap.add_argument("--epochs", type=int, default=10)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--max-iters", type=int, default=100)
  ap.add_argument("--methods", nargs="*", default=["quasi", "deer"])
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  rows = []
  for method in args.methods:
    both = run(method, args)
    cold, warm = both["cold"], both["warm"]
    diff = max(abs(a - b) for a, b in zip(cold["losses"], warm["losses"], strict=True))
    rows.append(dict(method=method, cold=cold, warm=warm, max_loss_difference=diff))
    print(
      method,
      cold["median_iterations"],
      warm["median_iterations"],
      cold["median_step_ms"],
      warm["median_step_ms"],
      diff,
      flush=True,
    )
  info = machine()
  config = {k: v for k, v in vars(args).items() if k != "out"}
  io.write_json(
    args.out / f"warm_start_{info['backend']}.json", dict(machine=info, config=config, rows=rows)
  )
  md = [
    f"Machine: {info['cpu']}, backend {info['backend']}, jax {info['jax']}; "
    f"`python benchmarks/warm_start.py` (GRU H = {args.H} regressor on the adding problem, "
    f"T = {args.T}, B = {args.B}, {args.batches} fixed batches × {args.epochs} epochs, Adam "
    f"lr {args.lr}; float32). Medians over the epochs after the first; the warm start is the "
    "trajectory returned the last time the same batch was seen.",
    "",
    "| method | iterations, cold | iterations, warm | ms/step, cold | ms/step, warm "
    "| speed-up | fell back (cold, warm) | max loss difference |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    c, w = r["cold"], r["warm"]
    md.append(
      f"| {r['method']} | {c['median_iterations']:g} | {w['median_iterations']:g} | "
      f"{c['median_step_ms']:.1f} | {w['median_step_ms']:.1f} | "
      f"{c['median_step_ms'] / w['median_step_ms']:.2f}× | {c['fell_back']}, {w['fell_back']} | "
      f"{r['max_loss_difference']:.1e} |"
    )
  io.atomic_write_text(args.out / f"warm_start_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

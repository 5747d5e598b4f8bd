"""ELK's initial damping λ: iterations to tolerance for ``damping=1.0`` (the default)
against 1e-6 (the ELK paper's small λ).

`rj.parallel_scan(method="elk")` on a tanh Elman RNN (H = 16, ``W ~ N(0, g²/H)``,
``V ~ N(0, 1/H)``, ``I = H``, driven by ``x_t ~ N(0, 1)``, float32, B = 1, T = 200, from
zeros, default tolerance 1e-5, a budget of T iterations, ``fallback="none"``), over
``--seeds`` draws. ELK adapts λ (halved after a step that lowers the merit, doubled
after one refused), so the setting is only where it starts. JSON and markdown go to
``--out`` (default ``benchmarks/results``).

    python benchmarks/parallel_elk_damping.py
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax.apps import io


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--H", type=int, default=16)
  ap.add_argument("--T", type=int, default=200)
  ap.add_argument("--gains", type=float, nargs="*", default=[0.5, 0.9, 1.5])
  ap.add_argument("--dampings", type=float, nargs="*", default=[1.0, 1e-6])
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  H, T = args.H, args.T
  rows = []
  for g in args.gains:
    cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(g))
    for seed in range(args.seeds):
      params = cell.init(jax.random.key(seed), H)
      xs = jax.random.normal(jax.random.key(1000 + seed), (T, 1, H), jnp.float32)
      want = rj.scan(cell, params, xs)[1]
      for damping in args.dampings:
        _, ys, info = rj.parallel_scan(
          cell, params, xs, method="elk", damping=damping, max_iters=T, fallback="none"
        )
        r = dict(
          g=g,
          seed=seed,
          damping=damping,
          iterations=int(info.iterations),
          converged=bool(info.converged),
          residual=float(info.residual),
          max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys - want))),
        )
        print(r, flush=True)
        rows.append(r)
  info = machine()
  config = {k: v for k, v in vars(args).items() if k != "out"}
  name = f"parallel_elk_damping_{info['backend']}"
  io.write_json(args.out / f"{name}.json", dict(machine=info, config=config, rows=rows))
  md = [
    f"Machine: {info['cpu']}, backend {info['backend']}, jax {info['jax']}; "
    f"`python benchmarks/parallel_elk_damping.py` (ELK, tanh Elman H = {H}, T = {T}, "
    "N(0, 1) drive, float32, tol 1e-5, budget T; one row per seed and initial λ).",
    "",
    "| g | seed | damping | iterations | converged | residual | max abs error vs rj.scan |",
    "|---:|---:|---:|---:|---|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['g']:g} | {r['seed']} | {r['damping']:g} | {r['iterations']} | "
      f"{r['converged']} | {r['residual']:.1e} | {r['max_abs_error_vs_scan']:.1e} |"
    )
  io.atomic_write_text(args.out / f"{name}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

"""DEER through overflow: Newton iterations to tolerance on chaotic driven tanh RNNs.

``h_t = tanh(h_{t-1} W + x_t V)`` (`rj.elman`, H = 16, ``W ~ N(0, g²/H)``,
``V ~ N(0, 1/H)`` with ``I = H``, no bias), driven by ``x_t ~ N(0, 1)``, from zeros,
B = 1, in float32 and float64. `rj.parallel_scan(method="deer")` with a budget of T
iterations and the default tolerance (``max |h_t − f(h_{t-1}, x_t)|`` at most 1e-5 in
float32, 1e-10 in float64), ``fallback="none"``:
its iterates that overflow are repaired (non-finite entries reset to the last
iterate's, magnitudes clipped at ``BOUND``) and the iteration goes on. The table
gives, per gain g and length T, over ``--seeds`` draws of W, V and x: the iterations
run, whether it converged, how many iterations needed a repair, and the largest
difference from `rj.scan`'s trajectory. (Before the repair, DEER stopped at its
first non-finite iterate.) JSON and markdown go to ``--out`` (default
``benchmarks/results``).

    python benchmarks/parallel_overflow.py
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


def one(g: float, T: int, H: int, seed: int, dtype: str) -> dict:
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(g))
  params = jax.tree.map(lambda a: a.astype(dtype), cell.init(jax.random.key(seed), H))
  xs = jax.random.normal(jax.random.key(1000 + seed), (T, 1, H), dtype)
  solve = jax.jit(
    lambda p, x: rj.parallel_scan(cell, p, x, method="deer", max_iters=T, fallback="none")
  )
  _, ys, info = solve(params, xs)
  want = rj.scan(cell, params, xs)[1]
  return dict(
    dtype=dtype,
    g=g,
    T=T,
    seed=seed,
    iterations=int(info.iterations),
    converged=bool(info.converged),
    repairs=int(info.repairs),
    nonfinite=bool(info.nonfinite),
    residual=float(info.residual),
    max_abs_error_vs_scan=float(jnp.max(jnp.abs(ys - want))),
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--H", type=int, default=16)
  ap.add_argument("--gains", type=float, nargs="*", default=[2.0, 3.0])
  ap.add_argument("--lengths", type=int, nargs="*", default=[100, 200, 500])
  ap.add_argument("--seeds", type=int, default=3)
  ap.add_argument("--dtypes", nargs="*", default=["float32", "float64"])
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  if "float64" in args.dtypes:
    jax.config.update("jax_enable_x64", True)
  rows = []
  for dtype in args.dtypes:
    for T in args.lengths:
      for g in args.gains:
        for seed in range(args.seeds):
          r = one(g, T, args.H, seed, dtype)
          print(r, flush=True)
          rows.append(r)
  info = machine()
  config = {k: v for k, v in vars(args).items() if k != "out"}
  name = f"parallel_overflow_{info['backend']}"
  io.write_json(args.out / f"{name}.json", dict(machine=info, config=config, rows=rows))
  md = [
    f"Machine: {info['cpu']}, backend {info['backend']}, jax {info['jax']}; "
    "`python benchmarks/parallel_overflow.py` (DEER, tanh Elman H = "
    f"{args.H}, W ~ N(0, g²/H), driven by x ~ N(0, 1), from zeros, budget T "
    "iterations, the default tol: 1e-5 in float32, 1e-10 in float64; one row per seed).",
    "",
    "| dtype | g | T | seed | iterations | converged | residual | iterations repaired "
    "| any non-finite | max abs error vs rj.scan |",
    "|---|---:|---:|---:|---:|---|---:|---:|---|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['dtype']} | {r['g']:g} | {r['T']} | {r['seed']} | {r['iterations']} | "
      f"{r['converged']} | {r['residual']:.1e} | {r['repairs']} | {r['nonfinite']} | "
      f"{r['max_abs_error_vs_scan']:.1e} |"
    )
  io.atomic_write_text(args.out / f"{name}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

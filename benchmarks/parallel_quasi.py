"""Quasi-DEER's Jacobian diagonal: one pass against the loop of S JVPs, per solve.

`rj.parallel_scan(method="quasi")` on a tanh Elman RNN (``W ~ N(0, g²/H)``,
``V ~ N(0, 1/H)``, ``I = H``, driven by ``x_t ~ N(0, 1)``, float32, B = 1, from zeros,
default tolerance, ``fallback="none"``), compiled twice in one process:

- before: the diagonals from a ``fori_loop`` of S JVPs (``DIAG_ONE_PASS_ELEMENTS = 0``,
  the old path);
- after: the default, one pass of ``jax.jacfwd`` under ``vmap`` and the diagonal.

Both with ``DIAG_CLOSED_FORM = False``: the Elman cell's `rnnjax.ClosedDiagonal` is not
used, so this compares the two ways a cell without one gets (the closed form against
the one pass: `benchmarks/parallel_references.py`, rnnjax elman against the hint-free
custom cell).

Compile excluded; the two are timed alternately (``--rounds`` rounds, each one call of
each), so the machine's load falls on both alike; the table gives the medians and
their ratio, and checks that both ran the same iterations to the same result. JSON
and markdown go to ``--out`` (default ``benchmarks/results``).

    python benchmarks/parallel_quasi.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax._src import parallel
from rnnjax.apps import io


def compiled(cell, params, xs, budget: int):
  """The quasi-DEER solve traced and compiled with the given diagonal budget."""
  default = parallel.DIAG_ONE_PASS_ELEMENTS
  parallel.DIAG_ONE_PASS_ELEMENTS = budget
  parallel.DIAG_CLOSED_FORM = False
  try:
    fn = jax.jit(lambda p, x: rj.parallel_scan(cell, p, x, method="quasi", fallback="none"))
    out = jax.block_until_ready(fn(params, xs))
  finally:
    parallel.DIAG_ONE_PASS_ELEMENTS = default
    parallel.DIAG_CLOSED_FORM = True
  return fn, out


def one(H: int, T: int, g: float, rounds: int) -> dict:
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(g))
  params = cell.init(jax.random.key(0), H)
  xs = jax.random.normal(jax.random.key(1), (T, 1, H), jnp.float32)
  before, (_, ys_b, info_b) = compiled(cell, params, xs, 0)
  after, (_, ys_a, info_a) = compiled(cell, params, xs, parallel.DIAG_ONE_PASS_ELEMENTS)
  times: dict[str, list[float]] = {"before": [], "after": []}
  for _ in range(rounds):
    for name, fn in (("before", before), ("after", after)):
      t = time.perf_counter()
      jax.block_until_ready(fn(params, xs))
      times[name].append(time.perf_counter() - t)
  med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
  return dict(
    H=H,
    T=T,
    g=g,
    iterations_before=int(info_b.iterations),
    iterations_after=int(info_a.iterations),
    converged=bool(info_a.converged) and bool(info_b.converged),
    max_abs_difference=float(jnp.max(jnp.abs(ys_a - ys_b))),
    ms_before=med["before"],
    ms_after=med["after"],
    speedup=med["before"] / med["after"],
    ms_before_all=[1e3 * t for t in times["before"]],
    ms_after_all=[1e3 * t for t in times["after"]],
  )


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--T", type=int, default=1000)
  ap.add_argument("--rounds", type=int, default=7)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  grid = [(16, 0.5), (16, 0.9), (8, 0.5), (8, 0.9), (32, 0.5), (32, 0.9), (64, 0.5), (64, 0.9)]
  rows = []
  for H, g in grid:
    r = one(H, args.T, g, args.rounds)
    print({k: v for k, v in r.items() if not k.endswith("_all")}, flush=True)
    rows.append(r)
  info = machine()
  config = dict(T=args.T, rounds=args.rounds, grid=grid)
  name = f"parallel_quasi_{info['backend']}"
  io.write_json(args.out / f"{name}.json", dict(machine=info, config=config, rows=rows))
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores, shared with other jobs while this ran: "
    f"read the ratios, not the absolute times), backend {info['backend']}, jax {info['jax']}; "
    f"`python benchmarks/parallel_quasi.py` (quasi-DEER, tanh Elman, T = {args.T}, B = 1, "
    "float32, N(0, 1) drive, default tol 1e-5). Per-solve medians of "
    f"{args.rounds} alternating calls, compile excluded; before: the diagonal from a loop "
    "of S JVPs; after: one pass (jacfwd under vmap, then the diagonal).",
    "",
    "| H | g | iterations (before, after) | converged | ms before | ms after | speed-up "
    "| max abs difference |",
    "|---:|---:|---|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['H']} | {r['g']:g} | {r['iterations_before']}, {r['iterations_after']} | "
      f"{r['converged']} | {r['ms_before']:.2f} | {r['ms_after']:.2f} | "
      f"{r['speedup']:.2f}× | {r['max_abs_difference']:.1e} |"
    )
  io.atomic_write_text(args.out / f"{name}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

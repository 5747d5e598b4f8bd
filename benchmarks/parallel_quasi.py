"""Quasi-DEER's Jacobian diagonal three ways, per solve: the cell's closed form, one pass
of ``jax.jacfwd``, and a loop of S JVPs.

`rj.parallel_scan(method="quasi")` on a tanh Elman RNN (``W ~ N(0, g²/H)``,
``V ~ N(0, 1/H)``, ``I = H``, driven by ``x_t ~ N(0, 1)``, float32, B = 1, from zeros,
default tolerance, ``fallback="none"``), compiled three times in one process:

- loop: the diagonals from a ``fori_loop`` of S JVPs (``DIAG_CLOSED_FORM = False``,
  ``DIAG_ONE_PASS_ELEMENTS = 0``);
- one pass: ``jax.jacfwd`` under ``vmap`` and the diagonal (``DIAG_CLOSED_FORM = False``),
  what a cell without `rnnjax.ClosedDiagonal` gets while ``T·B·S²`` is small enough;
- closed: the Elman cell's `rnnjax.ClosedDiagonal`, ``(1 − h_t²) ⊙ diag(w_h)`` (the default).

Compile excluded; the three are timed in interleaved rounds (``--rounds``, each one
call of each, the order rotated), so the machine's load falls on all alike; the table
gives the medians and the ratios, and checks that all ran the same iterations to the
same result. JSON and markdown go to ``--out`` (default ``benchmarks/results``).

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

WAYS = {"loop": (False, 0), "one pass": (False, None), "closed": (True, None)}
"""Each way's (``DIAG_CLOSED_FORM``, ``DIAG_ONE_PASS_ELEMENTS``; None: the default)."""


def compiled(cell, params, xs, closed: bool, budget: int | None):
  """The quasi-DEER solve traced and compiled with the given diagonal settings."""
  saved = parallel.DIAG_CLOSED_FORM, parallel.DIAG_ONE_PASS_ELEMENTS
  parallel.DIAG_CLOSED_FORM = closed
  parallel.DIAG_ONE_PASS_ELEMENTS = saved[1] if budget is None else budget
  try:
    fn = jax.jit(lambda p, x: rj.parallel_scan(cell, p, x, method="quasi", fallback="none"))
    out = jax.block_until_ready(fn(params, xs))
  finally:
    parallel.DIAG_CLOSED_FORM, parallel.DIAG_ONE_PASS_ELEMENTS = saved
  return fn, out


def one(H: int, T: int, g: float, rounds: int) -> dict:
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(g))
  params = cell.init(jax.random.key(0), H)
  xs = jax.random.normal(jax.random.key(1), (T, 1, H), jnp.float32)
  fns, outs = {}, {}
  for way, (closed, budget) in WAYS.items():
    fns[way], outs[way] = compiled(cell, params, xs, closed, budget)
  names = list(WAYS)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(rounds):
    for name in names[r % 3 :] + names[: r % 3]:
      t = time.perf_counter()
      jax.block_until_ready(fns[name](params, xs))
      times[name].append(time.perf_counter() - t)
  med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
  ys = {n: o[1] for n, o in outs.items()}
  return dict(
    H=H,
    T=T,
    g=g,
    iterations={n: int(o[2].iterations) for n, o in outs.items()},
    converged=all(bool(o[2].converged) for o in outs.values()),
    max_abs_difference=max(float(jnp.max(jnp.abs(ys[n] - ys["closed"]))) for n in names),
    ms=med,
    ms_all={n: [1e3 * t for t in v] for n, v in times.items()},
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
    print({k: v for k, v in r.items() if k != "ms_all"}, flush=True)
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
    f"{args.rounds} interleaved calls, compile excluded; loop: the diagonal from S JVPs; "
    "one pass: jacfwd under vmap, then the diagonal; closed: the cell's rj.ClosedDiagonal.",
    "",
    "| H | g | iterations (loop, one pass, closed) | converged | ms loop | ms one pass "
    "| ms closed | one pass / closed | loop / closed | max abs difference |",
    "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    it, ms = r["iterations"], r["ms"]
    md.append(
      f"| {r['H']} | {r['g']:g} | {it['loop']}, {it['one pass']}, {it['closed']} | "
      f"{r['converged']} | {ms['loop']:.2f} | {ms['one pass']:.2f} | {ms['closed']:.2f} | "
      f"{ms['one pass'] / ms['closed']:.2f}× | {ms['loop'] / ms['closed']:.2f}× | "
      f"{r['max_abs_difference']:.1e} |"
    )
  io.atomic_write_text(args.out / f"{name}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

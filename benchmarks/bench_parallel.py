"""Parallel-in-time evaluation against sequential rj.scan, measured honestly.

For a GRU (the cell of the DEER paper's tables) over a grid of T, H and B, times the
forward of `rj.parallel_scan` with each method (DEER, quasi-DEER, ELK, quasi-ELK) against
`rj.scan`'s, and forward+backward (grad of sum(ys²) w.r.t. params) of DEER against
`rj.scan`'s hand-written BPTT; records each method's iteration count and whether it
converged. Inputs are small (x ~ 0.1·N(0, 1)) and the GRU is as initialised, a
contracting system, so the iterations converge. Where the Jacobians (``T·B·S²``
floats, formed by DEER and ELK) would pass ``--max-gb``, those two are skipped and
listed; quasi-DEER and quasi-ELK hold only their diagonals. Medians of ``--reps``
after a warm-up, in one process; JSON and markdown go to ``--out`` (default
``benchmarks/results``).

    python benchmarks/bench_parallel.py                 # the CPU grid
    python benchmarks/bench_parallel.py --T 100000 --H 1 8 32 --B 1   # the GPU goal's shapes
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
from bench_kernels import (
  _peak_bytes,  # XLA's compiled temporary memory
  env_line,
  env_settings,  # thread counts and flags, stored beside the figures
  machine,  # the same machine description as the kernel tables
)

import rnnjax as rj
from rnnjax.apps import io

METHODS = ("deer", "quasi", "elk", "quasi-elk")


def _time(fn, *args, reps=3):
  out = jax.block_until_ready(fn(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), out


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--T", type=int, nargs="*", default=[1000, 10000, 100000])
  ap.add_argument("--H", type=int, nargs="*", default=[1, 8, 32, 128])
  ap.add_argument("--B", type=int, nargs="*", default=[1, 16])
  ap.add_argument("--reps", type=int, default=3)
  ap.add_argument("--max-gb", type=float, default=2.0)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument(
    "--memory", action="store_true", help="only XLA's compiled temporary memory, per method"
  )
  args = ap.parse_args(argv)
  if args.memory:
    return memory(args)
  rows, skipped = [], []
  info = machine() | env_settings()
  args.out.mkdir(parents=True, exist_ok=True)
  for T in args.T:
    for H in args.H:
      for B in args.B:
        gb = T * B * H * H * 4 / 1e9
        full = gb <= args.max_gb  # DEER and ELK form the [T, B, S, S] Jacobians
        if not full:
          skipped.append(dict(T=T, H=H, B=B, jacobian_gb=gb))
          print("DEER and ELK skipped", skipped[-1], flush=True)
        cell = rj.gru(H)
        params = cell.init(jax.random.key(0), I)
        xs = 0.1 * jax.random.normal(jax.random.key(1), (T, B, I))
        seq = jax.jit(lambda p, x, cell=cell: rj.scan(cell, p, x)[1])
        row = dict(T=T, H=H, B=B, scan_ms=1e3 * _time(seq, params, xs, reps=args.reps)[0])
        for method in METHODS if full else ("quasi", "quasi-elk"):
          par = jax.jit(
            lambda p, x, cell=cell, method=method: rj.parallel_scan(
              cell, p, x, method=method, fallback="none"
            )[1:]
          )
          t, (_, pinfo) = _time(par, params, xs, reps=args.reps)
          row[f"{method}_ms"] = 1e3 * t
          row[f"{method}_iters"] = int(pinfo.iterations)
          row[f"{method}_converged"] = bool(pinfo.converged)

        def loss_seq(p, x, cell=cell):
          return jnp.sum(rj.scan(cell, p, x)[1] ** 2)

        def loss_par(p, x, cell=cell):
          return jnp.sum(rj.parallel_scan(cell, p, x, fallback="none")[1] ** 2)

        row["scan_fwd_bwd_ms"] = 1e3 * _time(jax.jit(jax.grad(loss_seq)), params, xs)[0]
        if full:
          row["deer_fwd_bwd_ms"] = 1e3 * _time(jax.jit(jax.grad(loss_par)), params, xs)[0]
        rows.append(row)
        print(row, flush=True)
        write(args, info, rows, skipped)  # partial results survive a time limit
  write(args, info, rows, skipped)


I = 4  # input size


def write(args, info, rows, skipped):
  """``parallel_<backend>.{json,md}`` in ``args.out``, atomically."""
  io.write_json(
    args.out / f"parallel_{info['backend']}.json", dict(machine=info, rows=rows, skipped=skipped)
  )
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']} "
    f"({info['device']}), jax {info['jax']}; {env_line(info)}; float32; "
    "GRU as initialised, x ~ 0.1·N(0,1), "
    f"I = {I}; medians of {args.reps} after a warm-up; `python benchmarks/bench_parallel.py`.",
    "Speed-up = rj.scan's time / the method's (> 1: parallel wins).",
    "",
    "| T | H | B | rj.scan ms | DEER ms (iters) | quasi ms (iters) | ELK ms (iters) | "
    "quasi-ELK ms (iters) | best speed-up | fwd+bwd: rj.scan ms | DEER ms |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]

  def cell(r, m):
    return f"{r[m + '_ms']:.2f} ({r[m + '_iters']})" if m + "_ms" in r else "—"

  for r in rows:
    best = min(r[m + "_ms"] for m in METHODS if m + "_ms" in r)
    deer_bwd = f"{r['deer_fwd_bwd_ms']:.2f}" if "deer_fwd_bwd_ms" in r else "—"
    md.append(
      f"| {r['T']} | {r['H']} | {r['B']} | {r['scan_ms']:.2f} | "
      + " | ".join(cell(r, m) for m in METHODS)
      + f" | {r['scan_ms'] / best:.2f}x | {r['scan_fwd_bwd_ms']:.2f} | {deer_bwd} |"
    )
  if skipped:
    md += ["", "DEER and ELK skipped (their Jacobians alone would pass the memory budget):"]
    md += [f"- T={s['T']}, H={s['H']}, B={s['B']}: {s['jacobian_gb']:.1f} GB" for s in skipped]
  io.atomic_write_text(args.out / f"parallel_{info['backend']}.md", "\n".join(md) + "\n")


def memory(args):
  """XLA's temporary memory of the compiled forward of each method against rj.scan's
  (``memory_analysis().temp_size_in_bytes``: no run)."""
  rows, I = [], 4
  for T in args.T:
    for H in args.H:
      for B in args.B:
        cell = rj.gru(H)
        params = cell.init(jax.random.key(0), I)
        xs = jax.ShapeDtypeStruct((T, B, I), jnp.float32)
        row = dict(T=T, H=H, B=B, jacobian_mb=T * B * H * H * 4 / 1e6)
        row["scan_mb"] = _peak_bytes(lambda p, x, c=cell: rj.scan(c, p, x)[1], params, xs) / 1e6
        for method in METHODS:

          def fwd(p, x, c=cell, m=method):
            return rj.parallel_scan(c, p, x, method=m, fallback="none")[1]

          row[f"{method}_mb"] = _peak_bytes(fwd, params, xs) / 1e6
        for adjoint in ("parallel", "sequential"):  # training: quasi forward + its adjoint

          def grad(p, x, c=cell, a=adjoint):
            def loss(p):
              ys = rj.parallel_scan(c, p, x, method="quasi", fallback="none", adjoint=a)[1]
              return jnp.sum(ys**2)

            return jax.grad(loss)(p)

          row[f"quasi_grad_{adjoint}_mb"] = _peak_bytes(grad, params, xs) / 1e6
        row["scan_grad_mb"] = (
          _peak_bytes(
            lambda p, x, c=cell: jax.grad(lambda p: jnp.sum(rj.scan(c, p, x)[1] ** 2))(p),
            params,
            xs,
          )
          / 1e6
        )
        rows.append(row)
        print(row, flush=True)
  info = machine()
  io.write_json(args.out / f"parallel_memory_{info['backend']}.json", dict(machine=info, rows=rows))
  md = [
    f"Machine: {info['cpu']}, backend {info['backend']}, jax {info['jax']}; float32 GRU, I = 4; "
    "XLA's compiled temporary memory (`memory_analysis().temp_size_in_bytes`, no run), MB, "
    "of the forward of each method, and of the gradient (forward + backward) of rj.scan and "
    "of quasi-DEER with each adjoint; `python benchmarks/bench_parallel.py --memory`.",
    "",
    "| T | H | B | [T,B,S,S] floats | rj.scan | DEER | quasi | ELK | quasi-ELK "
    "| grad: rj.scan | grad: quasi, parallel adjoint | grad: quasi, sequential adjoint |",
    "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['T']} | {r['H']} | {r['B']} | {r['jacobian_mb']:.1f} | {r['scan_mb']:.2f} | "
      f"{r['deer_mb']:.1f} | {r['quasi_mb']:.1f} | {r['elk_mb']:.1f} | {r['quasi-elk_mb']:.1f} | "
      f"{r['scan_grad_mb']:.2f} | {r['quasi_grad_parallel_mb']:.1f} | "
      f"{r['quasi_grad_sequential_mb']:.1f} |"
    )
  io.atomic_write_text(args.out / f"parallel_memory_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

"""How fast the Greff et al. variants run beside the built-in LSTM (both with a
hand-written `BackwardRows` backward) and `rnnjax.peephole_lstm` (no hint): forward +
backward of ``rj.scan`` (``backward="auto"``), medians over
interleaved rounds (every cell once per round, the order rotated), in one process.

    python benchmarks/papers/greff2017_speed.py --rounds 15

Writes ``greff2017_speed.json`` and ``.md`` to ``--out`` (default
``benchmarks/results/papers``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_common import machine, machine_line

import rnnjax as rj
from rnnjax.apps import io

ROOT = Path(__file__).resolve().parents[2]
T, B, I, H = 100, 32, 32, 64

CELLS = {
  "lstm (built-in, BackwardRows)": rj.lstm(H),
  "peephole_lstm (no hint)": rj.peephole_lstm(H),
  "greff_lstm V (BackwardRows)": rj.greff_lstm(H, "V"),
  "greff_lstm NP (BackwardRows)": rj.greff_lstm(H, "NP"),
  "greff_lstm CIFG (BackwardRows)": rj.greff_lstm(H, "CIFG"),
  "greff_lstm FGR (BackwardRows)": rj.greff_lstm(H, "FGR"),
}


def timed(cell: rj.Cell) -> Callable[[], float]:
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, B, I))

  @jax.jit
  def fwd_bwd(p, xs):
    return jax.grad(lambda q: jnp.sum(rj.scan(cell, q, xs)[1] ** 2))(p)

  jax.block_until_ready(fwd_bwd(params, xs))  # compile and warm up

  def once() -> float:
    t = time.perf_counter()
    jax.block_until_ready(fwd_bwd(params, xs))
    return time.perf_counter() - t

  once()
  return once


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rounds", type=int, default=15)
  ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "papers")
  args = ap.parse_args(argv)
  fns = {name: timed(cell) for name, cell in CELLS.items()}
  names = list(fns)
  times: dict[str, list[float]] = {n: [] for n in names}
  for r in range(args.rounds):
    for n in names[r % len(names) :] + names[: r % len(names)]:
      times[n].append(fns[n]())
  base = statistics.median(times[names[0]])
  rows = [
    dict(cell=n, median_ms=1e3 * statistics.median(t), vs_lstm=statistics.median(t) / base)
    for n, t in times.items()
  ]
  result = dict(
    command=f"python benchmarks/papers/greff2017_speed.py --rounds {args.rounds}",
    machine=machine(),
    shape=dict(T=T, B=B, I=I, H=H),
    rounds=args.rounds,
    rows=rows,
  )
  md = [
    f"Command: `{result['command']}`. Machine: {machine_line(result['machine'])}, shared "
    f"with other jobs (interleaved rounds, medians). Forward + backward of `rj.scan`, "
    f"T = {T}, B = {B}, I = {I}, H = {H}.",
    "",
    "| cell | median ms | time / the built-in LSTM's |",
    "|---|---:|---:|",
  ]
  md += [f"| {r['cell']} | {r['median_ms']:.1f} | {r['vs_lstm']:.2f}× |" for r in rows]
  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / "greff2017_speed.json", result)
  io.atomic_write_text(args.out / "greff2017_speed.md", "\n".join(md) + "\n")
  print("\n".join(md))
  return result


if __name__ == "__main__":
  main()

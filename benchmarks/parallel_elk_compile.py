"""ELK on a small custom cell, as a new user calls it: compile time and run time apart.

A hint-free `rj.custom_cell` (``h_t = tanh(h_{t-1} W + x_t V)``, S = 12, I = 4, T = 200,
B = 1, float32) through `rj.parallel_scan(method="elk")` with the defaults:

- three plain calls in a row, outside ``jax.jit`` (what a new user writes), each timed
  to ``block_until_ready``;
- the same call under ``jax.jit``: trace and lower, compile, and then the run alone
  (median of ``--rounds``).

``--label`` names the rnnjax measured (run it once with each checkout on the path:
``PYTHONPATH=<checkout> python benchmarks/parallel_elk_compile.py --label before``);
each run adds its row to ``parallel_elk_compile_<backend>.{json,md}`` in ``--out``
(default ``benchmarks/results``), replacing an older row of the same label.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine

import rnnjax as rj
from rnnjax.apps import io

S, I, T = 12, 4, 200
TRACES: list[int] = []
"""One entry per trace of the cell's step (appended while JAX traces it, never at run
time): how many times a call re-traced the cell."""


def tiny() -> rj.Cell:
  def init(key: jax.Array, input_size: int) -> dict[str, jax.Array]:
    kw, kv = jax.random.split(key)
    return {
      "w": jax.random.normal(kw, (S, S)) / S**0.5,
      "v": jax.random.normal(kv, (input_size, S)) / input_size**0.5,
    }

  def step(p: dict, h: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    TRACES.append(1)
    h = jnp.tanh(h @ p["w"] + x @ p["v"])
    return h, h

  return rj.custom_cell(
    init, step, lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, S), dtype), name="tiny"
  )


def markdown(info_m: dict, rows: list[dict]) -> list[str]:
  """The table of every stored row."""
  md = [
    f"Machine: {info_m['cpu']} ({info_m['cores']} cores; each row gives the load average "
    f"before and after its run: compare rows of like load), backend {info_m['backend']}, jax "
    f"{info_m['jax']}; `python benchmarks/parallel_elk_compile.py` (ELK, a hint-free "
    f"custom tanh cell, S = {S}, I = {I}, T = {T}, B = 1, float32, default settings).",
    "",
    "| rnnjax | load | plain calls 1, 2, 3 (s) | step traced per call | jit: trace + lower (s) "
    "| compile (s) | run (ms) | iterations | converged |",
    "|---|---|---|---|---:|---:|---:|---:|---|",
  ]
  for r in rows:
    calls = ", ".join(f"{c:.2f}" for c in r["plain_calls_s"])
    load = "–" if "load" not in r else f"{r['load'][0]:.1f} → {r['load'][1]:.1f}"
    traces = ", ".join(map(str, r["step_traces_per_plain_call"]))
    md.append(
      f"| {r['label']} | {load} | {calls} | {traces} | "
      f"{r['trace_and_lower_s']:.2f} | {r['compile_s']:.2f} | "
      f"{r['run_ms']:.1f} | {r['iterations']} | {r['converged']} |"
    )
  return md


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--label", required=True)
  ap.add_argument("--rounds", type=int, default=7)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  load_before = os.getloadavg()[0]
  cell = tiny()
  params = cell.init(jax.random.key(0), I)
  xs = jax.random.normal(jax.random.key(1), (T, 1, I), jnp.float32)
  plain, traces = [], []
  for _ in range(3):
    n = len(TRACES)
    t = time.perf_counter()
    _, _, info = jax.block_until_ready(rj.parallel_scan(cell, params, xs, method="elk"))
    plain.append(time.perf_counter() - t)
    traces.append(len(TRACES) - n)
  fn = jax.jit(lambda p, x: rj.parallel_scan(cell, p, x, method="elk"))
  t = time.perf_counter()
  lowered = fn.lower(params, xs)
  t_lower = time.perf_counter() - t
  t = time.perf_counter()
  compiled = lowered.compile()
  t_compile = time.perf_counter() - t
  runs = []
  for _ in range(args.rounds):
    t = time.perf_counter()
    jax.block_until_ready(compiled(params, xs))
    runs.append(time.perf_counter() - t)
  row = dict(
    label=args.label,
    load=[load_before, os.getloadavg()[0]],
    plain_calls_s=plain,
    step_traces_per_plain_call=traces,
    trace_and_lower_s=t_lower,
    compile_s=t_compile,
    run_ms=1e3 * statistics.median(runs),
    iterations=int(info.iterations),
    converged=bool(info.converged),
  )
  print(row, flush=True)
  info_m = machine()
  name = f"parallel_elk_compile_{info_m['backend']}"
  path = args.out / f"{name}.json"
  old = json.loads(path.read_text(encoding="utf-8"))["rows"] if path.exists() else []
  rows = [r for r in old if r["label"] != args.label] + [row]
  io.write_json(path, dict(machine=info_m, config=dict(S=S, I=I, T=T, B=1), rows=rows))
  md = markdown(info_m, rows)
  io.atomic_write_text(args.out / f"{name}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

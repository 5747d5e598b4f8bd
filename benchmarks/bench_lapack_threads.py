"""What do OpenBLAS's threads cost `rj.jacobian.lyapunov_spectrum`, and does the
library's automatic limit (`rnnjax._src.host.lapack_threads`) recover it?

The full spectrum of a tanh RNN (H = 256, float64, a QR every step) in fresh
processes, alternated over rounds, three ways:

- ``default threads``: the jitted function itself (``lyapunov_spectrum.__wrapped__``),
  ``OPENBLAS_NUM_THREADS`` unset: OpenBLAS starts one thread per core;
- ``OPENBLAS_NUM_THREADS=1``: the same, the variable set before the start;
- ``automatic``: ``lyapunov_spectrum`` as the library exports it, the variable unset.

Wall time of one warm call (compiled on a short sequence first) and λ₁.
Writes ``lapack_threads_cpu.{json,md}`` to ``--out``.

    python benchmarks/bench_lapack_threads.py --steps 1000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

H, I = 256, 32
MODES = ("default threads", "OPENBLAS_NUM_THREADS=1", "automatic")

WORKER = """
import json, sys, time
import jax, jax.numpy as jnp
jax.config.update("jax_enable_x64", True)
import rnnjax as rj
mode, steps, H, I = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
cell = rj.elman(H)
params = cell.init(jax.random.key(0), I)
xs = jax.random.normal(jax.random.key(1), (steps, I), jnp.float64)
f = rj.jacobian.lyapunov_spectrum
f = f if mode == "automatic" else f.__wrapped__
jax.block_until_ready(f(cell, params, xs[:20], transient=10))  # compile, warm up
t0 = time.perf_counter()
lam = jax.block_until_ready(f(cell, params, xs, transient=10))
print(json.dumps(dict(seconds=time.perf_counter() - t0, lambda_1=float(lam[0]))))
"""


def run(mode, steps):
  env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
  if mode == "OPENBLAS_NUM_THREADS=1":
    env["OPENBLAS_NUM_THREADS"] = "1"
  root = str(Path(__file__).resolve().parents[1])
  env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run(
    [sys.executable, "-c", WORKER, mode, str(steps), str(H), str(I)],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--steps", type=int, default=1000)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args(argv)
  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import bench_kernels as bk

  from rnnjax.apps import io

  info = bk.machine() | bk.env_settings()
  info.update(steps=args.steps, H=H, rounds=args.rounds)
  info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  per = {m: [] for m in MODES}
  for k in range(args.rounds):
    for mode in MODES[k % len(MODES) :] + MODES[: k % len(MODES)]:
      per[mode].append(run(mode, args.steps))
      print(mode, per[mode][-1], flush=True)
  info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  rows = [
    dict(
      mode=m,
      seconds=statistics.median(r["seconds"] for r in per[m]),
      lambda_1=per[m][0]["lambda_1"],
      rounds=per[m],
    )
    for m in MODES
  ]
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), jax {info['jax']}; "
    f"{bk.env_line(info)} (in this parent process; each mode sets its own, as named); "
    f"load average {info['load_average']} at the start, {info['load_average_end']} at the end. "
    f"`rj.jacobian.lyapunov_spectrum`, elman H = {H}, float64, {args.steps} steps, a QR every "
    f"step; one warm call per fresh process, medians over {args.rounds} rounds, alternated. "
    "Written by `python benchmarks/bench_lapack_threads.py`.",
    "",
    "| OpenBLAS threads | seconds (median) | every round | λ₁ |",
    "|---|---:|---|---:|",
  ]
  for r in rows:
    every = ", ".join(f"{x['seconds']:.1f}" for x in r["rounds"])
    md.append(f"| {r['mode']} | {r['seconds']:.1f} | {every} | {r['lambda_1']:.12f} |")
  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / "lapack_threads_cpu.json", dict(machine=info, rows=rows))
  io.atomic_write_text(args.out / "lapack_threads_cpu.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

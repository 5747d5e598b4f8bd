"""Does `rnnjax.host.tune_host_allocator` cost a co-resident PyTorch, and which of its
three settings does rnnjax need?

Each configuration runs in fresh processes, alternated over rounds (one process
per configuration per round, the order rotated). A process sets its glibc
``mallopt`` settings first, then times, in one process: rnnjax's LSTM
forward+backward at the medium shape and at the latency shape, and PyTorch's
LSTM and GRU forward+backward at the latency shape and its LSTM at the medium
shape (the cases issue 24 saw slowed). Medians over rounds; per-round values
stored. Writes ``allocator_cpu.{json,md}`` to ``--out``.

    python benchmarks/bench_allocator.py             # 3 rounds
    python benchmarks/bench_allocator.py --rounds 2
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# name: the mallopt settings applied before JAX or torch starts (glibc malloc.h parameters)
M_TRIM, M_MMAP, M_ARENA = -1, -3, -8
CONFIGS = {
  "plain": {},
  "tuned (all three)": {M_MMAP: 1 << 30, M_ARENA: 1, M_TRIM: 2**31 - 1},
  "one arena": {M_ARENA: 1},
  "mmap threshold + no trimming": {M_MMAP: 1 << 30, M_TRIM: 2**31 - 1},
}
CASES = [  # (library, cell, shape)
  ("rnnjax", "lstm", "medium"),
  ("rnnjax", "gru", "latency"),
  ("torch", "lstm", "latency"),
  ("torch", "gru", "latency"),
  ("torch", "lstm", "medium"),
]
TARGET = 1.0  # seconds of timed calls per case and process (at least 3 calls)


def worker(config: str, torch_threads: int) -> None:
  """Apply ``config``'s settings, then time every case; print one JSON line."""
  settings = CONFIGS[config]
  if settings:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    assert all(libc.mallopt(k, v) for k, v in settings.items()), config
  import jax

  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import bench_kernels as bk

  if torch_threads:
    import torch

    torch.set_num_threads(torch_threads)
  out = {}
  for lib, cell, shape in CASES:
    B, T, I, H = bk.SHAPES[shape]
    if lib == "rnnjax":
      xs = jax.random.normal(jax.random.key(1), (T, B, I))
      fn, p = bk.rnnjax_impls(cell, I, H)["rnnjax bptt"]
      timer, _ = bk.jax_prepare(fn, p, xs)
    else:
      timer, _ = bk.torch_prepare(cell, B, T, I, H)
    bk.MIN_REPS = 3
    out[f"{lib} {cell} {shape}"] = timer(TARGET)[1] * 1e3  # fwd+bwd ms
  print(json.dumps(out), flush=True)


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--rounds", type=int, default=3)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  ap.add_argument(
    "--torch-threads",
    type=int,
    default=0,
    help="PyTorch's intra-op threads (default 0: its own default, one per core)",
  )
  ap.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    return worker(args.worker, args.torch_threads)

  sys.path.insert(0, str(Path(__file__).resolve().parent))
  import bench_kernels as bk

  from rnnjax.apps import io

  info = dict(bk.machine(), **bk.env_settings(), rounds=args.rounds)
  if args.torch_threads:
    info["torch_threads"] = args.torch_threads
  info["load_average"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  names = list(CONFIGS)
  per = {n: [] for n in names}
  for k in range(args.rounds):
    for name in names[k % len(names) :] + names[: k % len(names)]:
      res = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--torch-threads", str(args.torch_threads)],
        capture_output=True,
        text=True,
      )
      if res.returncode:
        sys.exit(f"{name}: the worker failed:\n{res.stderr[-3000:]}")
      per[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
      print(name, per[name][-1], flush=True)
  info["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
  cases = [f"{lib} {cell} {shape}" for lib, cell, shape in CASES]
  rows = [
    dict(
      config=n,
      **{c: statistics.median(r[c] for r in per[n]) for c in cases},
      rounds=per[n],
    )
    for n in names
  ]
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), jax {info['jax']}, torch "
    f"{info.get('torch', '?')}; {bk.env_line(info)}; load average {info['load_average']} at the "
    f"start, {info['load_average_end']} at the end (a shared machine). Forward+backward ms, "
    f"medians over {args.rounds} rounds, one fresh process per configuration and round "
    "(all the cases in that one process, rnnjax's first), alternated. Written by "
    "`python benchmarks/bench_allocator.py`.",
    "",
    "| glibc setting | " + " | ".join(cases) + " |",
    "|---|" + "---:|" * len(cases),
  ]
  for r in rows:
    cells = []
    for c in cases:
      vals = [x[c] for x in r["rounds"]]
      cells.append(f"{r[c]:.1f} ({min(vals):.1f}–{max(vals):.1f})")
    md.append(f"| {r['config']} | " + " | ".join(cells) + " |")
  args.out.mkdir(parents=True, exist_ok=True)
  io.write_json(args.out / "allocator_cpu.json", dict(machine=info, cases=cases, rows=rows))
  io.atomic_write_text(args.out / "allocator_cpu.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

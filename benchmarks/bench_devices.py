"""Does data parallelism pay on this machine? The char-LM's train step on 1 and 2 devices.

The step `rnnjax train` runs (`rnnjax.apps.training.make_train_step` over a
`rnnjax.apps.training.make_mesh` mesh: the batch and the TBPTT carries split
along the batch, params and Adam state replicated, XLA's all-reduce of the
gradients), on the CPU backend split into N devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=N``, each N in its own
subprocess. The model is the demo's (embedding 64, one LSTM layer of H units,
vocabulary 100) on random characters, batch B streams of T characters; each
row is the median step time after a warm-up (the faster of two rounds, run
alternately, as the machine is shared), and characters per second are B·T
over it. Writes JSON and a markdown table to ``--out`` (default
``benchmarks/results``, as ``devices_<backend>.*``).

    python benchmarks/bench_devices.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEVICES = (1, 2)
SHAPES = {  # name: (B, T, H)
  "demo": (32, 64, 256),  # rnnjax demo's batch, window and width
  "small": (32, 64, 64),
}
EMBED, VOCAB = 64, 100
WARMUP, REPS = 3, 40
ROUNDS = 2  # subprocesses per device count, alternating 1, 2, 1, 2; the faster median is kept

ROOT = Path(__file__).resolve().parents[1]


def worker(devices: int) -> dict:
  """Time the train step on ``devices`` devices (this process's XLA_FLAGS made them)."""
  sys.path.insert(0, str(ROOT))
  import jax
  import numpy as np

  from rnnjax.apps import training
  from rnnjax.apps.models.lm import char_lm

  mesh = training.make_mesh(devices)
  rep, split = training.replicated(mesh), training.batch_sharded(mesh, 0)
  out = {}
  for name, (B, T, H) in SHAPES.items():
    training.check_batch(B, mesh)
    model = char_lm(VOCAB, H, embed=EMBED)
    optimizer = training.make_optimizer()
    params = model.init(jax.random.key(0))
    step = training.make_train_step(
      model.loss, optimizer, has_aux=True, mesh=mesh, batch_axes=(1, 1, 0), aux_axis=0
    )
    state = [training.put(params, rep), training.put(optimizer.init(params), rep)]
    carries = training.put(model.initial_carry(B), split)
    ids = np.random.default_rng(0).integers(0, VOCAB, (T + 1, B)).astype(np.int32)
    x, y = (training.put(a, training.batch_sharded(mesh, 1)) for a in (ids[:-1], ids[1:]))
    times = []
    for i in range(WARMUP + REPS):
      t0 = time.perf_counter()
      result = step(*state, x, y, carries)
      jax.block_until_ready(result)
      if i >= WARMUP:
        times.append(time.perf_counter() - t0)
      state, carries = [result.params, result.opt_state], result.aux
    median = statistics.median(times)
    out[name] = dict(B=B, T=T, H=H, step_ms=1e3 * median, chars_per_s=B * T / median)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
  parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker is not None:
    print(json.dumps(worker(args.worker)))
    return

  sys.path.insert(0, str(ROOT / "benchmarks"))
  from bench_kernels import machine  # the same machine description as the other tables

  rounds: dict[int, list[dict]] = {n: [] for n in DEVICES}
  for _ in range(ROUNDS):
    for n in DEVICES:
      env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}")
      done = subprocess.run(
        [sys.executable, __file__, "--worker", str(n)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
      )
      rounds[n].append(json.loads(done.stdout.strip().splitlines()[-1]))
  rows = {
    n: {name: min((r[name] for r in runs), key=lambda r: r["step_ms"]) for name in SHAPES}
    for n, runs in rounds.items()
  }
  info = machine()
  result = dict(machine=info, warmup=WARMUP, reps=REPS, rows=rows, rounds=rounds)
  args.out.mkdir(parents=True, exist_ok=True)
  stem = args.out / f"devices_{info['backend']}"
  stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
  lines = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, jax "
    f"{info['jax']}; the char-LM train step of `rnnjax train` (embedding {EMBED}, one LSTM "
    f"layer, vocabulary {VOCAB}), data parallel over N devices made by "
    f"`--xla_force_host_platform_device_count=N`; medians of {REPS} steps after {WARMUP}, "
    f"the faster of {ROUNDS} alternating rounds. "
    "`python benchmarks/bench_devices.py`.",
    "",
    "| shape (B, T, H) | devices | step ms | characters/s | vs 1 device |",
    "|---|---:|---:|---:|---:|",
  ]
  for name, (B, T, H) in SHAPES.items():
    base = rows[1][name]["chars_per_s"]
    for n in DEVICES:
      r = rows[n][name]
      lines.append(
        f"| {name} ({B}, {T}, {H}) | {n} | {r['step_ms']:.1f} | {r['chars_per_s']:,.0f} | "
        f"{r['chars_per_s'] / base:.2f}x |"
      )
  stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
  print("\n".join(lines))


if __name__ == "__main__":
  main()

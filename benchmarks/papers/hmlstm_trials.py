"""Tuning trials for `rnnjax experiment boundaries` (issue 26): one trial per call,
appended to benchmarks/results/papers/hmlstm_boundaries_trials.json.

Each trial trains with a step budget (deterministic, unlike the command's wall
clock, so that trials run on a loaded machine compare) and records its settings
with level 1's boundary F1, precision, recall, boundary rate and steps.

    python benchmarks/papers/hmlstm_trials.py --steps 5000 --boundary-penalty 0.01
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import time
from pathlib import Path

from rnnjax.apps import boundaries, io

OUT = Path(__file__).resolve().parents[1] / "results" / "papers" / "hmlstm_boundaries_trials.json"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, required=True)
  parser.add_argument("--note", default="")
  for name, value in boundaries.DEFAULTS.items():
    if name in ("minutes", "successors"):
      continue
    parser.add_argument("--" + name.replace("_", "-"), type=type(value), default=value)
  parser.add_argument("--a-max", type=float, default=5.0)
  parser.add_argument("--seed", type=int, default=0)
  args = vars(parser.parse_args())
  note, steps = args.pop("note"), args.pop("steps")
  t0 = time.time()
  r = boundaries.run_boundaries(steps=steps, progress=False, **args)
  trial = dict(
    settings=dict(args, steps=steps),
    note=note,
    boundary_f1=r["boundary_f1"],
    precision=r["precision"],
    recall=r["recall"],
    boundary_rate=r["boundary_rate"],
    word_end_rate=r["word_end_rate"],
    chance_f1=r["chance_f1"],
    val_bpc=r["val_bpc"],
    steps=r["steps"],
    train_seconds=round(r["train_seconds"], 1),
    load_average=round(os.getloadavg()[0], 2),
    machine=f"{platform.machine()}, {os.cpu_count()} CPUs",
    finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    sample=r["sample"],
  )
  with open(OUT.with_suffix(".lock"), "w") as lock:  # trials may run side by side
    fcntl.flock(lock, fcntl.LOCK_EX)
    trials = json.loads(OUT.read_text())["trials"] if OUT.exists() else []
    trials.append(trial)
    io.write_json(OUT, dict(command="rnnjax experiment boundaries", trials=trials))
  print(json.dumps({k: v for k, v in trial.items() if k != "sample"}), f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
  main()

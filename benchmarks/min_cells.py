"""minGRU and minLSTM (Feng et al. 2024) beside the GRU: the adding problem and the char-LM.

Each cell is trained by the project's own code for the same wall clock on this machine:
the adding problem at T = 100 (`rnnjax.apps.experiment.run_experiment`, what
`rnnjax experiment adding --cell NAME` runs: H = 128, batch 50, Adam 1e-3) and the demo's
char-LM (`rnnjax.apps.charlm.train_char_lm` on the embedded corpus, H = 256, the demo's
settings). Writes JSON and markdown to ``--out`` (default ``benchmarks/results``).

    python benchmarks/min_cells.py --minutes 3
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine  # the same machine description as the kernel tables

from rnnjax.apps import charlm, data, experiment, io

CELLS = ("gru", "mingru", "minlstm")


def write_markdown(out: Path, info: dict, minutes: float, rows: list[dict]) -> None:
  """The markdown table of ``rows`` (also re-rendered from the stored JSON)."""
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, jax "
    f"{info['jax']}; each cell {minutes:g} minutes per task; "
    f"`python benchmarks/min_cells.py --minutes {minutes:g}`.",
    "",
    "| cell | adding T=100: steps | test MSE (baseline 0.1667) | char-LM: steps | "
    "validation bits/char |",
    "|---|---:|---:|---:|---:|",
  ]
  for r in rows:
    md.append(
      f"| {r['cell']} | {r['adding_steps']} | {r['adding_test_mse']:.2e} | "
      f"{r['charlm_steps']} | {r['charlm_val_bpc']:.3f} |"
    )
  io.atomic_write_text(out / f"min_cells_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--minutes", type=float, default=3.0)
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  corpus = data.python_source_corpus()
  rows = []
  for name in CELLS:
    r = experiment.run_experiment("adding", name, 100, minutes=args.minutes, progress=False)
    lm = charlm.train_char_lm(
      corpus,
      charlm.ModelConfig(cell=name),
      charlm.TrainConfig(minutes=args.minutes),
      progress=False,
    )
    rows.append(
      dict(
        cell=name,
        adding_steps=r["steps"],
        adding_test_mse=r["final_test_loss"],
        adding_baseline=r["baseline"],
        charlm_steps=lm.steps,
        charlm_val_bpc=lm.val_bpc,
      )
    )
    print(rows[-1], flush=True)
  info = machine()
  io.write_json(
    args.out / f"min_cells_{info['backend']}.json",
    dict(machine=info, minutes=args.minutes, rows=rows),
  )
  write_markdown(args.out, info, args.minutes, rows)


if __name__ == "__main__":
  main()

"""HM-LSTM against an LSTM of the same parameter count, same data, same wall clock.

Both are char-LMs trained by the demo's code (`rnnjax.apps.charlm.train_char_lm`, what
`rnnjax demo` and `rnnjax train --cell hmlstm` run) on the demo's embedded corpus, each for
``--minutes`` of wall clock with the learning rate decayed over it; the LSTM's hidden size
is the one whose model (embedding, cell, head) has the HM-LSTM model's parameter count
(embedding, levels, output module, head), to the nearest unit. Reports validation bits per
character. Writes JSON and markdown to ``--out`` (default ``benchmarks/results``).

    python benchmarks/hmlstm_lm.py --minutes 5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import machine  # the same machine description as the kernel tables

from rnnjax.apps import charlm, data, io
from rnnjax.apps.models.lm import char_lm


def n_params(cfg: charlm.ModelConfig, vocab_size: int) -> int:
  model = char_lm(vocab_size, cfg.hidden, embed=cfg.embed, layers=cfg.layers, cell=cfg.cell)
  return sum(int(v.size) for v in jax.tree.leaves(model.init(jax.random.key(0))))


def main():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--minutes", type=float, default=5.0)
  ap.add_argument("--hidden", type=int, default=256, help="units per HM-LSTM level")
  ap.add_argument("--layers", type=int, default=2, help="HM-LSTM levels")
  ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
  args = ap.parse_args()
  corpus = data.python_source_corpus()
  vocab = data.Vocab.from_text(corpus.train)
  hm = charlm.ModelConfig(hidden=args.hidden, layers=args.layers, cell="hmlstm")
  target = n_params(hm, vocab.size)
  # the LSTM model's count is V·E + E·4H + H·4H + 4H + H·V + V: solve for H
  E, V = hm.embed, vocab.size
  a, b, c = 4.0, 4.0 * E + 4.0 + V, V * E + V - target
  H = round((-b + (b * b - 4 * a * c) ** 0.5) / (2 * a))
  assert abs(n_params(charlm.ModelConfig(hidden=H, cell="lstm"), V) - target) < 8 * H + V
  lstm = charlm.ModelConfig(hidden=H, cell="lstm")
  rows = []
  for label, cfg in ((f"HM-LSTM {args.layers}x{args.hidden}", hm), (f"LSTM {H}", lstm)):
    run = charlm.train_char_lm(corpus, cfg, charlm.TrainConfig(minutes=args.minutes))
    rows.append(
      dict(
        model=label,
        config=cfg._asdict(),
        params=n_params(cfg, vocab.size),
        steps=run.steps,
        train_seconds=run.train_seconds,
        val_bpc=run.val_bpc,
        baseline_bpc=run.baseline_bpc,
      )
    )
    print(rows[-1], flush=True)
  info = machine()
  out = dict(machine=info, minutes=args.minutes, corpus=corpus.source, rows=rows)
  io.write_json(args.out / f"hmlstm_lm_{info['backend']}.json", out)
  md = [
    f"Machine: {info['cpu']} ({info['cores']} cores), backend {info['backend']}, jax "
    f"{info['jax']}; each model trained for {args.minutes:g} minutes of wall clock by "
    "`rnnjax.apps.charlm.train_char_lm` (batch 32, seq_len 64, Adam 5e-3 cosine-decayed over "
    "the clock) on the demo's corpus; `python benchmarks/hmlstm_lm.py "
    f"--minutes {args.minutes:g}`.",
    "",
    "| model | params | steps | validation bits/char |",
    "|---|---:|---:|---:|",
  ]
  for r in rows:
    md.append(f"| {r['model']} | {r['params']:,} | {r['steps']} | {r['val_bpc']:.3f} |")
  io.atomic_write_text(args.out / f"hmlstm_lm_{info['backend']}.md", "\n".join(md) + "\n")
  print("\n".join(md))


if __name__ == "__main__":
  main()

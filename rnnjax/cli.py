"""The ``rnnjax`` command (also ``python -m rnnjax``)."""

from __future__ import annotations

import argparse
import sys
import textwrap
from pathlib import Path


def _positive_float(text):
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
  return value


def _positive_int(text):
  value = int(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text}")
  return value


def _add_demo(sub):
  p = sub.add_parser(
      "demo", help="train a character-level LSTM on Python's own source and sample from it",
      description="Train a char-level LSTM language model (embedding -> LSTM -> softmax) with "
                  "Adam and global-norm clipping on the standard library's source (or --text), "
                  "report validation bits per character and print a sample.")
  p.add_argument("--minutes", type=_positive_float, default=3.0,
                 help="wall-clock training budget (default 3)")
  p.add_argument("--out", type=Path, default=Path("runs/demo"),
                 help="output folder for summary.json (default runs/demo)")
  p.add_argument("--text", type=Path, default=None,
                 help="train on this UTF-8 text file instead of the embedded corpus")
  p.add_argument("--temperature", type=_positive_float, default=0.8,
                 help="sampling temperature (default 0.8)")
  p.add_argument("--hidden", type=_positive_int, default=256, help="LSTM size H (default 256)")
  p.add_argument("--batch", type=_positive_int, default=32, help="parallel streams (default 32)")
  p.add_argument("--seq-len", type=_positive_int, default=64,
                 help="truncated-BPTT window (default 64)")
  p.add_argument("--lr", type=_positive_float, default=3e-3, help="Adam learning rate")
  p.add_argument("--max-steps", type=_positive_int, default=None,
                 help="stop after this many steps (overrides the time budget)")
  p.add_argument("--sample-chars", type=_positive_int, default=500)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
  p.set_defaults(func=_run_demo)


def _run_demo(args):
  import jax

  from rnnjax import data, io, train

  corpus = data.text_corpus(args.text) if args.text else data.python_source_corpus()
  print(f"corpus: {corpus.source}: {len(corpus.train):,} train / {len(corpus.val):,} "
        f"validation characters; backend {jax.default_backend()}")
  run = train.train_char_lm(
      corpus, hidden=args.hidden, batch=args.batch, seq_len=args.seq_len, lr=args.lr,
      minutes=args.minutes, max_steps=args.max_steps, seed=args.seed,
      temperature=args.temperature, sample_chars=args.sample_chars,
      progress=not args.no_progress)
  summary = dict(
      val_bpc=round(run.val_bpc, 4), baseline_bpc=round(run.baseline_bpc, 4),
      steps=run.steps, train_seconds=round(run.train_seconds, 2), sample=run.sample,
      vocab_size=run.vocab.size, corpus=corpus.source, config=run.model.config,
      batch=args.batch, seq_len=args.seq_len, lr=args.lr, seed=args.seed,
      temperature=args.temperature, history=run.history)
  path = io.write_json(args.out / "summary.json", summary)
  print(f"\n{run.steps} steps in {run.train_seconds:.0f} s; validation "
        f"{run.val_bpc:.3f} bits/char (uniform baseline log2(V={run.vocab.size}) = "
        f"{run.baseline_bpc:.3f})")
  print(f"\nsample (temperature {args.temperature}):\n" + "-" * 72)
  print(run.sample)
  print("-" * 72 + f"\nwrote {path}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="rnnjax", description="Recurrent neural networks in JAX.",
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=textwrap.dedent("""\
        examples:
          rnnjax demo --minutes 3
          rnnjax demo --text my_corpus.txt --out runs/mine"""))
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  _add_demo(sub)
  return parser


def main(argv=None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  try:
    return args.func(args)
  except ValueError as e:
    parser.exit(2, f"rnnjax {args.command}: error: {e}\n")


if __name__ == "__main__":
  sys.exit(main())

"""The ``rnnjax`` command (also ``python -m rnnjax``)."""

from __future__ import annotations

import argparse
import sys
import textwrap
import traceback
from pathlib import Path
from typing import Any, TypeAlias

_Sub: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

SEED_HELP = "random seed of the initial weights; the sample uses SEED + 1 (default %(default)s)"


def _cell_names() -> list[str]:
  import rnnjax as rj

  return list(rj.cell_names())


def _rate(text: str) -> float:
  value = float(text)
  if not 0.0 <= value < 1.0:
    raise argparse.ArgumentTypeError(f"expected a rate in [0, 1), got {text}")
  return value


def _positive_float(text: str) -> float:
  value = float(text)
  if not value > 0:
    raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
  return value


def _non_negative_float(text: str) -> float:
  value = float(text)
  if not value >= 0:
    raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text}")
  return value


def _slope(text: str) -> float:
  value = float(text)
  if not value >= 1.0:
    raise argparse.ArgumentTypeError(f"must be >= 1 (1: no annealing), got {text}")
  return value


def _positive_int(text: str) -> int:
  value = int(text)
  if value <= 0:
    raise argparse.ArgumentTypeError(f"expected an integer > 0, got {text}")
  return value


def _add_devices(p: argparse.ArgumentParser) -> None:
  p.add_argument(
    "--devices",
    type=_positive_int,
    default=None,
    help="data parallel over this many devices, the batch split among them; --batch must "
    "be a multiple of it (default: all visible; on CPU, "
    "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N)",
  )


def _add_distributed(p: argparse.ArgumentParser) -> None:
  """Options that join several processes into one run (jax.distributed.initialize)."""
  p.add_argument(
    "--coordinator",
    default=None,
    metavar="HOST:PORT",
    help="join a multi-process run whose process 0 listens at HOST:PORT; 'auto' lets JAX "
    "read the cluster (SLURM, Open MPI, Cloud TPU) (default: one process)",
  )
  p.add_argument(
    "--num-processes",
    type=_positive_int,
    default=None,
    help="with --coordinator HOST:PORT: the number of processes (default: none)",
  )
  p.add_argument(
    "--process-id",
    type=int,
    default=None,
    help="with --coordinator HOST:PORT: this process's index, 0 to --num-processes - 1 "
    "(default: none)",
  )


def _init_distributed(args: argparse.Namespace) -> None:
  """`jax.distributed.initialize` from --coordinator, --num-processes, --process-id."""
  if args.coordinator is None:
    if args.num_processes is not None or args.process_id is not None:
      raise ValueError("--num-processes and --process-id need --coordinator HOST:PORT")
    return
  import jax

  if args.coordinator == "auto":
    jax.distributed.initialize()
    return
  if args.num_processes is None or args.process_id is None:
    raise ValueError(
      f"--coordinator {args.coordinator} needs --num-processes N and --process-id I "
      "(or --coordinator auto on a cluster JAX detects)"
    )
  if not 0 <= args.process_id < args.num_processes:
    raise ValueError(
      f"--process-id {args.process_id} is out of range for --num-processes "
      f"{args.num_processes}: use 0 to {args.num_processes - 1}"
    )
  jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)


def _add_demo(sub: _Sub) -> None:
  p = sub.add_parser(
    "demo",
    help="train a character-level LSTM on Python's own source and sample from it",
    description="Train a char-level LSTM language model (embedding -> LSTM -> softmax) with "
    "Adam and global-norm clipping on the standard library's source (or --text), "
    "report validation bits per character and print a sample.",
  )
  p.add_argument(
    "--minutes",
    type=_positive_float,
    default=3.0,
    help="wall-clock training budget in minutes (default %(default)s)",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=Path("runs/demo"),
    help="output folder: summary.json, checkpoints/, bpc.png and the report; a demo run "
    "replaces the checkpoints of an earlier one there (default %(default)s)",
  )
  p.add_argument(
    "--temperature",
    type=_positive_float,
    default=0.8,
    help="sampling temperature of the printed sample (default %(default)s)",
  )
  _lm_args(p, hidden_help="LSTM size H", lr_over="the budget")
  p.add_argument(
    "--max-steps",
    type=_positive_int,
    default=None,
    help="stop after this many steps, overriding the time budget (default: none; "
    "--minutes decides)",
  )
  p.add_argument(
    "--sample-chars",
    type=_positive_int,
    default=500,
    help="characters to sample after the prime ('def ' when the vocabulary has those "
    "characters, else the start of the held-out text) (default %(default)s)",
  )
  p.add_argument(
    "--no-report",
    action="store_true",
    help="skip the report: cells, embeddings, gradient flow (default: written)",
  )
  _add_devices(p)
  p.set_defaults(func=_run_demo)


def _baseline_label(vocab_size: int) -> str:
  return f"uniform baseline log2(V={vocab_size})"


def _run_demo(args: argparse.Namespace) -> int:
  from rnnjax.apps import charlm, data

  corpus = data.text_corpus(args.text) if args.text else data.python_source_corpus()
  with charlm.hold(args.out):  # the run folder is this run's until its report is written
    return _demo(args, corpus)


def _demo(args: argparse.Namespace, corpus: Any) -> int:
  import jax

  from rnnjax.apps import charlm, io, plot, report

  print(
    f"corpus: {corpus.source}: {len(corpus.train):,} train / {len(corpus.val):,} "
    f"validation characters; backend {jax.default_backend()}"
  )
  run = charlm.train_char_lm(
    corpus,
    _model_config(args),
    charlm.TrainConfig(
      batch=args.batch,
      seq_len=args.seq_len,
      lr=args.lr,
      minutes=args.minutes,
      max_steps=args.max_steps,
      seed=args.seed,
      devices=args.devices,
    ),
    out_dir=args.out,
    overwrite=True,
    progress=not args.no_progress,
  )
  sample = charlm.generate(
    run.model,
    run.params,
    run.vocab,
    charlm.default_prime(run.vocab, corpus.val),
    args.sample_chars,
    args.temperature,
    args.seed + 1,
  )
  summary = dict(
    val_bpc=round(run.val_bpc, 4),
    baseline_bpc=round(run.baseline_bpc, 4),
    steps=run.steps,
    train_seconds=round(run.train_seconds, 2),
    devices=run.devices,
    sample=sample,
    vocab_size=run.vocab.size,
    corpus=corpus.source,
    config=run.model.config,
    batch=args.batch,
    seq_len=args.seq_len,
    lr=args.lr,
    seed=args.seed,
    temperature=args.temperature,
    history=run.history,
  )
  path = io.write_json(args.out / "summary.json", summary)
  plot.loss_curve(
    run.history,
    args.out / "bpc.png",
    "bpc",
    "training bits per character",
    baseline=run.baseline_bpc,
    baseline_label=_baseline_label(run.vocab.size),
  )
  if not args.no_report:
    findings = report.analyse(run.model, run.params, run.vocab, corpus.val[:3000], args.out)
    summary["report"] = dict(
      best_cells=findings["best_cells"],
      verdict=findings["diagnosis"]["verdict"],
      embedding_clusters=findings["embeddings"]["cluster"],
    )
    path = io.write_json(args.out / "summary.json", summary)
    md = report.write_markdown(summary, findings, args.out)
  print(
    f"\n{run.steps} steps in {run.train_seconds:.0f} s; validation "
    f"{run.val_bpc:.3f} bits/char (uniform baseline log2(V={run.vocab.size}) = "
    f"{run.baseline_bpc:.3f})"
  )
  print(f"\nsample (temperature {args.temperature}):\n" + "-" * 72)
  print(sample)
  print("-" * 72 + f"\nwrote {path}")
  if not args.no_report:
    print("cells best correlated with features of held-out code:")
    for name, v in findings["best_cells"].items():
      print(f"  {name:12s} cell {v[0]['cell']:4d}  r = {v[0]['r']:+.3f}")
    print(f"gradient flow of the trained LSTM: {findings['diagnosis']['verdict']}")
    print(f"report: {md}")
  return 0


def _model_config(args: argparse.Namespace, **more: Any) -> Any:
  """The char-LM's `ModelConfig` from the options `_lm_args` adds (and ``more``)."""
  from rnnjax.apps import charlm

  return charlm.ModelConfig(
    hidden=args.hidden,
    dropout=args.dropout,
    weight_drop=args.weight_drop,
    zoneout=args.zoneout,
    **more,
  )


def _lm_args(p: argparse.ArgumentParser, *, hidden_help: str, lr_over: str) -> None:
  """The options `demo` and `train` share, their defaults read from the char-LM's configs."""
  from rnnjax.apps import charlm

  model, train = charlm.ModelConfig(), charlm.TrainConfig()
  p.add_argument(
    "--text",
    type=Path,
    default=None,
    help="train on this UTF-8 text file (default: the embedded corpus, the source of "
    "Python's standard library)",
  )
  p.add_argument(
    "--hidden",
    type=_positive_int,
    default=model.hidden,
    help=f"{hidden_help} (default %(default)s)",
  )
  p.add_argument(
    "--batch",
    type=_positive_int,
    default=train.batch,
    help="parallel streams (default %(default)s)",
  )
  p.add_argument(
    "--seq-len",
    type=_positive_int,
    default=train.seq_len,
    help="truncated-BPTT window in characters (default %(default)s)",
  )
  p.add_argument(
    "--lr",
    type=_positive_float,
    default=train.lr,
    help=f"peak Adam learning rate, cosine-decayed over {lr_over} (default %(default)s)",
  )
  p.add_argument(
    "--dropout",
    type=_rate,
    default=model.dropout,
    help="variational (locked) dropout on the embeddings and every layer's outputs, one mask "
    "per sequence (default %(default)s: off)",
  )
  p.add_argument(
    "--weight-drop",
    type=_rate,
    default=model.weight_drop,
    help="DropConnect on every layer's recurrent matrix w_h, one mask per training step "
    "(default %(default)s: off)",
  )
  p.add_argument(
    "--zoneout",
    type=_rate,
    default=model.zoneout,
    help="zoneout: each state unit keeps its previous value with this probability at each "
    "step; evaluation uses the expectation (default %(default)s: off)",
  )
  p.add_argument("--seed", type=int, default=train.seed, help=SEED_HELP)
  p.add_argument(
    "--no-progress", action="store_true", help="hide the progress bar (default: shown)"
  )


def _add_train(sub: _Sub) -> None:
  p = sub.add_parser(
    "train",
    help="train a char-level language model with checkpoints and --resume",
    description="Deterministic, resumable training of a char-level LM for --steps steps, "
    "data parallel over the visible devices: Orbax checkpoints (params, optimizer state, "
    "TBPTT carries, data position, RNG) every --checkpoint-every steps, saved "
    "atomically in the background; metrics to metrics.jsonl; a BPC plot; --resume "
    "continues a killed run to the same loss curve, and a larger --steps extends a "
    "finished one.",
  )
  p.add_argument(
    "--steps",
    type=_positive_int,
    default=2000,
    help="training steps in all; with --resume a larger number extends the run, the "
    "learning-rate decay then following the new budget (default %(default)s)",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=Path("runs/train"),
    help="output folder: checkpoints/, metrics.jsonl, summary.json, bpc.png; a folder that "
    "holds a run needs --resume, and one that another run is writing to is refused "
    "(default %(default)s)",
  )
  p.add_argument(
    "--checkpoint-every",
    type=_positive_int,
    default=100,
    help="save a checkpoint in OUT/checkpoints every this many steps, and at the end "
    "(default %(default)s)",
  )
  p.add_argument(
    "--keep-checkpoints",
    type=_positive_int,
    default=2,
    help="keep this many of the newest checkpoints (default %(default)s)",
  )
  p.add_argument(
    "--resume",
    action="store_true",
    help="continue the run in OUT from its newest checkpoint (default: start a new run; "
    "refused if OUT holds one)",
  )
  p.add_argument(
    "--cell", choices=_cell_names(), default="lstm", help="recurrent cell (default %(default)s)"
  )
  p.add_argument(
    "--layers",
    type=_positive_int,
    default=1,
    help="stacked recurrent layers; for --cell hmlstm the HM-LSTM's levels, at least 2 "
    "(default %(default)s)",
  )
  p.add_argument(
    "--a-max",
    type=_slope,
    default=5.0,
    help="--cell hmlstm: the boundary slope a, annealed from 1 to this (1: no annealing) "
    "(default %(default)s)",
  )
  p.add_argument(
    "--a-steps",
    type=_positive_int,
    default=2000,
    help="--cell hmlstm: the training steps the slope takes to reach --a-max (default %(default)s)",
  )
  p.add_argument(
    "--clip",
    type=_positive_float,
    default=1.0,
    help="global-norm gradient clipping threshold (Pascanu et al. 2013) (default %(default)s)",
  )
  p.add_argument(
    "--log-every",
    type=_positive_int,
    default=10,
    help="append a row to OUT/metrics.jsonl every this many steps (default %(default)s)",
  )
  _lm_args(p, hidden_help="hidden size H of each layer", lr_over="--steps")
  _add_devices(p)
  _add_distributed(p)
  p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
  _init_distributed(args)
  from rnnjax.apps import charlm, data

  corpus = data.text_corpus(args.text) if args.text else data.python_source_corpus()
  with charlm.hold(args.out):  # the run folder is this run's until its summary is written
    return _train(args, corpus)


def _train(args: argparse.Namespace, corpus: Any) -> int:
  import jax

  from rnnjax.apps import charlm, io, plot

  run = charlm.train_char_lm(
    corpus,
    _model_config(args, layers=args.layers, cell=args.cell, a_max=args.a_max, a_steps=args.a_steps),
    charlm.TrainConfig(
      batch=args.batch,
      seq_len=args.seq_len,
      lr=args.lr,
      clip=args.clip,
      max_steps=args.steps,
      minutes=0,
      seed=args.seed,
      log_every=args.log_every,
      checkpoint_every=args.checkpoint_every,
      devices=args.devices,
      keep_checkpoints=args.keep_checkpoints,
    ),
    out_dir=args.out,
    resume=args.resume,
    progress=not args.no_progress and jax.process_index() == 0,
  )
  if jax.process_index() != 0:  # process 0 writes the summary and the plot
    return 0
  prime = charlm.default_prime(run.vocab, corpus.val)
  sample = charlm.generate(run.model, run.params, run.vocab, prime, 400, 0.8, args.seed + 1)
  io.write_json(
    args.out / "summary.json",
    dict(
      val_bpc=run.val_bpc,
      baseline_bpc=run.baseline_bpc,
      steps=run.steps,
      resumed_from=run.resumed_from,
      train_seconds=run.train_seconds,
      devices=run.devices,
      processes=jax.process_count(),
      sample=sample,
      config=run.model.config,
    ),
  )
  plot.loss_curve(
    run.history,
    args.out / "bpc.png",
    "bpc",
    "training bits per character",
    baseline=run.baseline_bpc,
    baseline_label=_baseline_label(run.vocab.size),
  )
  resumed = "" if run.resumed_from is None else f" (resumed at step {run.resumed_from})"
  print(
    f"step {run.steps}{resumed} on {run.devices} device{'s' if run.devices > 1 else ''}: "
    f"validation {run.val_bpc:.3f} bits/char (baseline {run.baseline_bpc:.3f}); wrote "
    f"{args.out}/checkpoints, metrics.jsonl, bpc.png"
  )
  return 0


def _add_generate(sub: _Sub) -> None:
  p = sub.add_parser(
    "generate",
    help="sample text from a trained char model",
    description="Load the newest checkpoint of a `demo` or `train` run and sample.",
  )
  p.add_argument(
    "--run",
    type=Path,
    default=Path("runs/demo"),
    help="run folder with checkpoints/ (default %(default)s)",
  )
  p.add_argument(
    "--prime",
    default=None,
    help="text to start from, made of characters the model was trained on (default: 'def ' "
    "when the vocabulary has those characters, else its first character)",
  )
  p.add_argument(
    "--chars",
    type=_positive_int,
    default=500,
    help="characters to sample after the prime (default %(default)s)",
  )
  p.add_argument(
    "--temperature",
    type=_positive_float,
    default=0.8,
    help="sampling temperature; lower is more conservative (default %(default)s)",
  )
  p.add_argument(
    "--seed", type=int, default=0, help="random seed of the sampling (default %(default)s)"
  )
  p.add_argument(
    "--step",
    type=int,
    default=None,
    help="read the checkpoint of this step, one Orbax kept (default: the newest)",
  )
  p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
  from rnnjax.apps import charlm

  model, params, vocab, _ = charlm.restore_model(args.run, args.step)
  prime = charlm.default_prime(vocab) if args.prime is None else args.prime
  print(charlm.generate(model, params, vocab, prime, args.chars, args.temperature, args.seed))
  return 0


def _add_text_args(p: argparse.ArgumentParser) -> None:
  """--run, --text and --chars: the run and the text `explore` and `visualize` read."""
  p.add_argument(
    "--run",
    type=Path,
    default=Path("runs/demo"),
    help="run folder with checkpoints/ (default %(default)s)",
  )
  p.add_argument(
    "--text",
    type=Path,
    default=None,
    help="UTF-8 text to show (default: held-out standard-library code)",
  )
  p.add_argument(
    "--chars",
    type=_positive_int,
    default=3000,
    help="characters of the text to use (default %(default)s)",
  )


def _analysis_text(args: argparse.Namespace) -> str:
  from rnnjax.apps import data

  text = data.text_corpus(args.text).train if args.text else data.python_source_corpus().val
  return text[: args.chars]


def _add_explore(sub: _Sub) -> None:
  p = sub.add_parser(
    "explore",
    help="write one interactive HTML page: any cell over the text, hypothesis selection, "
    "gradient flow",
    description="Run a trained char model (a `demo` or `train` run) over a text and write one "
    "self-contained HTML page (no server or network): the text coloured by any cell's h or "
    "c with a feature strip under each line; cells ranked for a selected range of text or "
    "a feature, and where they match elsewhere; and, for every EVERY-th character t, the "
    "gradient ||dL_t/ds_k|| back along the text, the step Jacobian's spectral norm and its "
    "singular values (rnnjax.jacobian). `rnnjax visualize` writes the static fallback.",
  )
  _add_text_args(p)
  p.add_argument(
    "--every",
    type=_positive_int,
    default=50,
    help="the gradient panel's positions: every this many characters (default %(default)s)",
  )
  p.add_argument(
    "--window",
    type=_positive_int,
    default=200,
    help="characters back along the text to follow each gradient (default %(default)s)",
  )
  p.add_argument(
    "--out", type=Path, default=None, help="the HTML file to write (default: RUN/explore.html)"
  )
  p.set_defaults(func=_run_explore)


def _run_explore(args: argparse.Namespace) -> int:
  from rnnjax.apps import charlm, explore

  model, params, vocab, _ = charlm.restore_model(args.run)
  text = _analysis_text(args)
  out = args.out or args.run / "explore.html"
  r = explore.explore(model, params, vocab, text, out, every=args.every, window=args.window)
  print(
    f"wrote {r['path']} ({r['bytes'] / 1e6:.2f} MB): {r['chars']:,} characters, "
    f"{' + '.join(map(str, r['cells']))} cells, gradient flow at {len(r['positions'])} "
    f"positions"
  )
  return 0


def _add_visualize(sub: _Sub) -> None:
  p = sub.add_parser(
    "visualize",
    help="the static fallback of `explore`: HTML and PNGs of the cells best correlated "
    "with features",
    description="Run a trained char model (a `demo` or `train` run) over a text, find the "
    "cells best correlated with inside-quotes, bracket depth, indentation, "
    "column and inside-comment, and write a static HTML page (no JavaScript) and PNGs. "
    "`rnnjax explore` writes the interactive page with every cell.",
  )
  _add_text_args(p)
  p.add_argument(
    "--cell", type=int, default=None, help="show this cell (default: the best cell per feature)"
  )
  p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN/visualize)")
  p.set_defaults(func=_run_visualize)


def _run_visualize(args: argparse.Namespace) -> int:
  from rnnjax.apps import charlm, interpret

  model, params, vocab, _ = charlm.restore_model(args.run)
  text = _analysis_text(args)
  out = args.out or args.run / "visualize"
  states = interpret.char_states(model, params, vocab, text)
  if args.cell is not None and not 0 <= args.cell < states.shape[1]:
    raise ValueError(f"--cell {args.cell} is out of range: the model has {states.shape[1]} cells")
  best = interpret.write_static(
    text, states, out, interpret.state_name(model), cell=args.cell, top=3
  )
  for name, v in best.items():
    print(f"{name:12s} " + "  ".join(f"cell {c['cell']:4d} r={c['r']:+.3f}" for c in v))
  n = 1 if args.cell is not None else len(best)
  print(f"wrote {out / 'visualize.html'}, features.json and {n} PNGs")
  return 0


def _by_task(values: dict[str, str]) -> str:
  """``{"adding": "50", "copy": "50", "reverse": "128"}`` as
  ``"50 for adding and copy, 128 for reverse"``."""
  groups: dict[str, list[str]] = {}
  for task, value in values.items():
    groups.setdefault(value, []).append(task)
  return ", ".join(f"{value} for {' and '.join(tasks)}" for value, tasks in groups.items())


def _experiment_defaults() -> dict[str, str]:
  """What --batch, --lr and --steps default to, per task, read from
  rnnjax.apps.experiment so that the help text cannot drift from it."""
  import inspect

  from rnnjax.apps import boundaries, experiment

  signatures = dict(
    adding=inspect.signature(experiment.run_experiment).parameters,
    reverse=inspect.signature(experiment.run_seq2seq).parameters,
    boundaries=inspect.signature(boundaries.run_boundaries).parameters,
  )
  signatures["copy"] = signatures["adding"]

  def per_task(name: str) -> str:
    return _by_task({t: str(s[name].default) for t, s in signatures.items()})

  def budget(b: dict[str, Any]) -> str:
    parts = [f"{b['steps']} steps"] if b.get("steps") else []
    parts += [f"{b['minutes']:g} minutes"] if b.get("minutes") else []
    return " and ".join(parts)

  return dict(
    hidden=per_task("hidden"),
    batch=per_task("batch"),
    lr=per_task("lr"),
    budget=_by_task({t: budget(b) for t, b in experiment.DEFAULT_BUDGET.items()}),
    boundary_penalty=str(boundaries.DEFAULTS["boundary_penalty"]),
  )


def _add_experiment(sub: _Sub) -> None:
  defaults = _experiment_defaults()
  p = sub.add_parser(
    "experiment",
    help="long-range tasks (adding, copy), seq2seq reversal, HM-LSTM boundaries",
    description="Train a cell on the adding problem or the copy-memory task "
    "(Arjovsky et al. 2016) and compare the test loss with the task's analytic "
    "baseline; train an encoder-decoder to reverse digit strings and report "
    "exact-match accuracy on held-out strings; or train an HM-LSTM on text of "
    "random-letter words and score its first level's boundaries against the word ends.",
  )
  p.add_argument(
    "task",
    choices=["adding", "copy", "reverse", "boundaries"],
    help="adding or copy (long-range memory, one cell), reverse (encoder-decoder), or "
    "boundaries (an HM-LSTM char-LM; --cell is ignored)",
  )
  p.add_argument(
    "--cell", choices=_cell_names(), default="lstm", help="recurrent cell (default %(default)s)"
  )
  p.add_argument(
    "--T",
    type=_positive_int,
    default=100,
    help="sequence length; reverse: the longest string (default %(default)s)",
  )
  p.add_argument(
    "--hidden",
    type=_positive_int,
    default=None,
    help=f"hidden size H (per level for boundaries) (default: {defaults['hidden']})",
  )
  p.add_argument(
    "--batch",
    type=_positive_int,
    default=None,
    help=f"sequences per step (default: {defaults['batch']})",
  )
  p.add_argument(
    "--lr",
    type=_positive_float,
    default=None,
    help=f"Adam learning rate (default: {defaults['lr']})",
  )
  p.add_argument(
    "--steps",
    type=_positive_int,
    default=None,
    help=f"training steps (default, with no --minutes either: a budget of {defaults['budget']})",
  )
  p.add_argument(
    "--minutes",
    type=_positive_float,
    default=None,
    help="wall-clock training budget in minutes (default: as for --steps)",
  )
  p.add_argument(
    "--layers",
    type=_positive_int,
    default=2,
    help="boundaries: the HM-LSTM's levels, 2 or 3 (default %(default)s)",
  )
  p.add_argument(
    "--a-max",
    type=_slope,
    default=5.0,
    help="boundaries: the boundary slope, annealed from 1 to this (1: no annealing) "
    "(default %(default)s)",
  )
  p.add_argument(
    "--boundary-penalty",
    type=_non_negative_float,
    default=None,
    help="boundaries: each first-level boundary costs this many nats in training, a "
    f"deviation from the paper (default: {defaults['boundary_penalty']})",
  )
  p.add_argument(
    "--estimator",
    choices=["straight_through", "reinforce"],
    default="straight_through",
    help="boundaries: the boundaries' gradient estimator, the paper's straight-through or "
    "REINFORCE, of higher variance (default %(default)s)",
  )
  p.add_argument(
    "--f1-curve",
    action="store_true",
    help="boundaries: also score F1 during training, at steps 1, 2, 5, 10, 20, 50, ... "
    "(default: off)",
  )
  p.add_argument(
    "--seed", type=int, default=0, help="random seed of weights and data (default %(default)s)"
  )
  p.add_argument(
    "--json",
    type=Path,
    default=None,
    help="write the results to this JSON file (default: print only)",
  )
  p.add_argument(
    "--no-progress", action="store_true", help="hide the progress bar (default: shown)"
  )
  _add_devices(p)
  p.set_defaults(func=_run_experiment)


def _run_experiment(args: argparse.Namespace) -> int:
  from rnnjax.apps import experiment, io

  if args.steps is None and args.minutes is None:
    budget = experiment.DEFAULT_BUDGET[args.task]
    args.steps, args.minutes = budget.get("steps"), budget.get("minutes")
  common: dict[str, Any] = dict(
    steps=args.steps,
    minutes=args.minutes,
    seed=args.seed,
    progress=not args.no_progress,
  )
  if args.hidden:
    common["hidden"] = args.hidden
  if args.batch:
    common["batch"] = args.batch
  if args.lr:
    common["lr"] = args.lr
  if args.task == "boundaries":
    from rnnjax.apps import boundaries

    if args.devices is not None:
      raise ValueError(
        f"--devices {args.devices} is not taken by the boundaries experiment yet: it trains "
        "on all visible devices; choose them with "
        "XLA_FLAGS=--xla_force_host_platform_device_count=N (CPU) or CUDA_VISIBLE_DEVICES"
      )

    if args.boundary_penalty is not None:
      common["boundary_penalty"] = args.boundary_penalty
    r = boundaries.run_boundaries(
      layers=args.layers,
      a_max=args.a_max,
      estimator=args.estimator,
      f1_curve=args.f1_curve,
      **common,
    )
    print(
      f"boundaries, {args.layers}-level HM-LSTM: {r['steps']} steps in "
      f"{r['train_seconds']:.0f} s; level-1 boundaries against word ends: precision "
      f"{r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['boundary_f1']:.3f} (chance "
      f"{r['chance_f1']:.3f}); boundary rates {[round(b, 3) for b in r['boundary_rate']]}; "
      f"validation {r['val_bpc']:.3f} bits/char"
    )
  elif args.task == "reverse":
    r = experiment.run_seq2seq(args.cell, args.T, devices=args.devices, **common)
    print(
      f"reverse (strings of 1..{args.T} digits), {args.cell}: {r['steps']} steps in "
      f"{r['train_seconds']:.0f} s; held-out exact match {100 * r['exact_match']:.1f}% "
      f"(test loss {r['final_test_loss']:.4f} nats/token)"
    )
  else:
    r = experiment.run_experiment(args.task, args.cell, args.T, devices=args.devices, **common)
    verdict = "solved" if r["solved"] else "not solved"
    print(
      f"{args.task} T={args.T}, {args.cell}: {r['steps']} steps in {r['train_seconds']:.0f} s; "
      f"test loss {r['final_test_loss']:.4f} vs baseline {r['baseline']:.4f} ({verdict})"
    )
  r.pop("params", None)
  if args.json:
    print(f"wrote {io.write_json(args.json, r)}")
  return 0


def _add_jacobian(sub: _Sub) -> None:
  p = sub.add_parser(
    "jacobian",
    help="diagnose exploding/vanishing gradients of a cell at initialisation",
    description="Step Jacobians, their norms and the lecture's bound, products by lag, "
    "gradient norms by lag and the largest Lyapunov exponent of a cell driven by "
    "random inputs; writes report.json and PNG plots.",
  )
  p.add_argument(
    "--cell", choices=_cell_names(), default="elman", help="recurrent cell (default %(default)s)"
  )
  p.add_argument(
    "--activation",
    choices=["tanh", "relu", "sigmoid", "linear"],
    default=None,
    help="nonlinearity of --cell elman; an error with other cells, whose gates fix "
    "theirs (default: tanh)",
  )
  p.add_argument(
    "--init",
    choices=["orthogonal", "identity", "gaussian"],
    default="orthogonal",
    help="recurrent initialiser (default %(default)s)",
  )
  p.add_argument(
    "--gain",
    type=_positive_float,
    default=1.0,
    help="scale of the recurrent matrix; gaussian: g in N(0, g²/H) (default %(default)s)",
  )
  p.add_argument(
    "--hidden", type=_positive_int, default=128, help="hidden size H (default %(default)s)"
  )
  p.add_argument(
    "--input-size",
    type=_positive_int,
    default=8,
    help="size of the random inputs (default %(default)s)",
  )
  p.add_argument(
    "--T", type=_positive_int, default=200, help="sequence length (default %(default)s)"
  )
  p.add_argument(
    "--input-scale",
    type=float,
    default=1.0,
    help="standard deviation of the random inputs (default %(default)s)",
  )
  p.add_argument(
    "--seed",
    type=int,
    default=0,
    help="random seed of the weights and inputs (default %(default)s)",
  )
  p.add_argument(
    "--out",
    type=Path,
    default=Path("runs/jacobian"),
    help="output folder for report.json and the PNGs (default %(default)s)",
  )
  p.set_defaults(func=_run_jacobian)


def pascanu_text(pascanu: dict[str, Any], verdict: str, rtol: float | None = None) -> str:
  """One line on Pascanu et al.'s conditions that never contradicts the measured
  ``verdict``: vanishing guaranteed (``σ_max < 1/γ``), nothing decided
  (``σ_max ≈ 1/γ`` within ``rtol``, default `rnnjax.jacobian.SIGMA_RTOL`), or
  explosion possible but not guaranteed (``σ_max > 1/γ``)."""
  if rtol is None:
    from rnnjax import jacobian

    rtol = jacobian.SIGMA_RTOL
  sigma, threshold, gamma = pascanu["sigma_max"], pascanu["threshold"], pascanu["gamma"]
  head = f"Pascanu et al.: σ_max(W) = {sigma:.6g}"
  if pascanu["vanishing_sufficient"]:
    text = (
      f"{head} < 1/γ = {threshold:.6g}: vanishing guaranteed for any input "
      f"(every step has ‖J_t‖₂ ≤ γ·σ_max = {gamma * sigma:.4g} < 1)"
    )
    if verdict != "vanishing":
      text += f"; the decay is within the verdict's tolerance, so it reads {verdict}"
    return text
  if pascanu["exploding_necessary"]:
    return (
      f"{head} > 1/γ = {threshold:.6g}: explosion possible but not guaranteed; "
      f"the measured verdict ({verdict}) decides"
    )
  return (
    f"{head} ≈ 1/γ = {threshold:.6g} (relative tolerance {rtol:g}): the bound decides "
    f"nothing; the measured verdict ({verdict}) does"
  )


def _run_jacobian(args: argparse.Namespace) -> int:
  import jax

  import rnnjax as rj
  from rnnjax import jacobian
  from rnnjax.apps import io, plot

  g = args.gain
  rec = {
    "orthogonal": rj.init.orthogonal(g),
    "identity": rj.init.identity(g),
    "gaussian": rj.init.gaussian(g),
  }[args.init]
  options: dict[str, Any] = {}
  if (args.init, g) != ("orthogonal", 1.0):  # the built-ins' default needs no option
    options["recurrent_init"] = rec
  if args.activation is not None:
    options["activation"] = args.activation
  try:
    cell = rj.make_cell(args.cell, args.hidden, **options)
  except TypeError as e:  # the cell's factory does not take one of the options
    if "activation" in str(e):
      raise ValueError(
        f"--activation {args.activation} does not apply to --cell {args.cell}: its factory "
        f"takes no activation (a gated cell's gates fix its nonlinearities); use --cell elman"
      ) from None
    if "recurrent_init" in str(e):
      raise ValueError(
        f"--init {args.init} --gain {g} does not apply to --cell {args.cell}: its factory "
        f"takes no recurrent_init; use --cell elman, gru or lstm"
      ) from None
    raise
  kp, kx = jax.random.split(jax.random.key(args.seed))
  params = cell.init(kp, args.input_size)
  xs = args.input_scale * jax.random.normal(kx, (args.T, args.input_size))
  report = jacobian.diagnose(cell, params, xs)
  report["config"] = vars(args) | {"out": str(args.out), "func": None}
  path = io.write_json(args.out / "report.json", report)
  figs = plot.jacobian_figures(report, args.out)
  ev = report["evidence"]
  print(
    f"{report['cell']}: verdict {report['verdict']}; λ₁ = {ev['lyapunov_max']:.4f}/step, "
    f"log‖∏J‖₂ per step = {ev['log_product_norm_per_step']:.4f}, mean ‖J_t‖₂ = "
    f"{ev['mean_step_spectral_norm']:.3f}"
  )
  if "pascanu" in report:
    print(pascanu_text(report["pascanu"], report["verdict"]))
  note = plot.zero_gradient_note(report["grad_norm_by_lag"])
  if note is not None:
    print(f"gradients by lag: {note}; products_by_lag.png marks the lag")
  print(f"wrote {path} and {', '.join(str(f) for f in figs)}")
  return 0


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
    prog="rnnjax",
    description="Recurrent neural networks in JAX.",
    formatter_class=argparse.RawDescriptionHelpFormatter,
    epilog=textwrap.dedent("""\
        examples:
          rnnjax demo --minutes 3
          rnnjax demo --text my_corpus.txt --out runs/mine"""),
  )
  _add_debug(parser, "debug")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  sub.required = True
  _add_demo(sub)
  _add_train(sub)
  _add_generate(sub)
  _add_experiment(sub)
  _add_explore(sub)
  _add_visualize(sub)
  _add_jacobian(sub)
  for command in sub.choices.values():  # --debug after the command too
    _add_debug(command, "debug_command")
  return parser


def _add_debug(parser: argparse.ArgumentParser, dest: str) -> None:
  parser.add_argument(
    "--debug",
    dest=dest,
    action="store_true",
    help="on an error, print the Python traceback before the one-line message (default: "
    "the message only)",
  )


def error_line(e: BaseException) -> str:
  """The one line that reports ``e``: a ValueError's message (the library's
  errors say what is wrong and the fix), an OSError's file and reason, and for
  anything else its type and message with a pointer to ``--debug``.

  >>> error_line(PermissionError(13, "Permission denied", "runs/x"))
  'runs/x: permission denied'
  >>> error_line(ValueError("bad\\nvalue"))
  'bad value'
  """
  if isinstance(e, OSError) and e.strerror:
    where = e.filename if e.filename is not None else ""
    text = f"{where}: {e.strerror[:1].lower()}{e.strerror[1:]}" if where else e.strerror
    if e.filename2 is not None:
      text += f" ({e.filename2})"
  elif isinstance(e, ValueError | OSError) or type(e).__module__.startswith("rnnjax"):
    text = str(e) or type(e).__name__
  else:
    text = f"{type(e).__name__}: {e} (rnnjax --debug shows where)"
  return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
  """Run the ``rnnjax`` command line ``argv`` (default: ``sys.argv[1:]``).

  Every failure ends the same way: one line ``rnnjax <command>: error: ...``
  on stderr and exit status 2 (`SystemExit`); Ctrl-C ends with ``rnnjax
  <command>: interrupted`` and status 130. ``--debug`` (before or after the
  command) prints the traceback first.
  """
  parser = build_parser()
  args = parser.parse_args(argv)
  debug = args.debug or getattr(args, "debug_command", False)
  try:
    return args.func(args)
  except KeyboardInterrupt:  # Ctrl-C: the checkpoints already saved stay
    if debug:
      traceback.print_exc()
    parser.exit(130, f"rnnjax {args.command}: interrupted\n")
  except Exception as e:  # every failure is one line
    if debug:
      traceback.print_exc()
    parser.exit(2, f"rnnjax {args.command}: error: {error_line(e)}\n")


def run() -> int:
  """The ``rnnjax`` command: `rnnjax.host.tune_host_allocator`, then `main`.

  The allocator setting is process-wide, so it is made here, in the command's
  own process, and not in `main`, which tests and scripts call in theirs.
  """
  import rnnjax as rj

  rj.host.tune_host_allocator()
  return main()


if __name__ == "__main__":
  sys.exit(run())

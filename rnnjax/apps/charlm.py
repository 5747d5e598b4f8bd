"""Training a character-level language model: the demo and ``rnnjax train``.

Adam with global-norm clipping and a cosine learning-rate decay
(`rnnjax.apps.training`), truncated BPTT with the carry passed between
consecutive windows of parallel streams, a step or wall-clock budget, and
checkpoints from which a killed run resumes to the same loss curve.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from rnnjax.apps import checkpoint, io, training
from rnnjax.apps.data import Corpus, Vocab, stream_batches
from rnnjax.apps.models.lm import CharLM, CharLMParams, char_lm

LN2 = math.log(2.0)
CHECKPOINT = "checkpoint.ckpt"
METRICS = "metrics.jsonl"


class ModelConfig(NamedTuple):
  """The char-LM's shape."""

  hidden: int = 256
  embed: int = 64
  layers: int = 1
  cell: str = "lstm"
  dropout: float = 0.0  # locked dropout on embeddings and layer outputs
  weight_drop: float = 0.0  # DropConnect on every w_h
  zoneout: float = 0.0  # zoneout on every layer's state units
  a_max: float = 5.0  # the HM-LSTM's final boundary slope (rnnjax.slope_annealing)
  a_steps: int = 2000  # the training steps to reach it


class TrainConfig(NamedTuple):
  """How the char-LM is trained.

  With ``max_steps`` the run is deterministic (the learning rate decays by
  step) and can checkpoint and resume; otherwise it runs for ``minutes`` of
  wall clock with the decay following the clock.
  """

  batch: int = 32
  seq_len: int = 64
  lr: float = 5e-3
  clip: float = 1.0
  minutes: float = 3.0
  max_steps: int | None = None
  seed: int = 0
  log_every: int = 10
  checkpoint_every: int = 0


class CharLMRun(NamedTuple):
  """What `train_char_lm` returns."""

  model: CharLM
  params: CharLMParams
  vocab: Vocab
  val_bpc: float
  baseline_bpc: float
  steps: int
  train_seconds: float
  history: list[dict[str, Any]]


def evaluate_bpc(
  model: CharLM, params: CharLMParams, ids: np.ndarray, batch: int = 32, seq_len: int = 256
) -> float:
  """Bits per character on ``ids``, streams read once with the carry passed on."""
  batch = max(1, min(batch, (len(ids) - 1) // seq_len))
  loss_fn = jax.jit(model.loss)
  carries = model.initial_carry(batch)
  total, count = 0.0, 0
  window = stream_batches(ids, batch, seq_len, forever=False)
  for w in range(window.count):
    x, y = window(w)
    loss, carries = loss_fn(params, jnp.asarray(x), jnp.asarray(y), carries)
    total += float(loss) * x.size
    count += x.size
  return total / count / LN2


def default_prime(vocab: Vocab, text: str = "") -> str:
  """The prime of the samples the commands print: ``"def "`` when the vocabulary
  has its characters (Python source), else the first four characters of
  ``text`` (held-out text of the run's corpus), else the vocabulary's first
  known character."""
  if set("def ") <= set(vocab.chars):
    return "def "
  return text[:4] or vocab.chars[1:2] or vocab.chars[:1]


def generate(
  model: CharLM,
  params: CharLMParams,
  vocab: Vocab,
  prime: str = "def ",
  n: int = 400,
  temperature: float = 0.8,
  seed: int = 0,
) -> str:
  """``prime`` followed by ``n`` sampled characters."""
  if not prime:
    raise ValueError("prime must be at least one character")
  unknown = sorted(set(prime) - set(vocab.chars))
  if unknown:
    raise ValueError(
      f"prime has characters the model never saw: {unknown!r}; the vocabulary "
      f"has {vocab.size} characters, use a prime made of them"
    )
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  out = model.sample(params, jax.random.key(seed), jnp.asarray(vocab.encode(prime)), n, temperature)
  return prime + vocab.decode(np.asarray(out))


def _meta(vocab: Vocab, model: CharLM, cfg: TrainConfig, corpus: Corpus) -> dict[str, Any]:
  """What a checkpoint records about the run that wrote it."""
  return dict(
    vocab=vocab.chars,
    model=model.config,
    train=dict(
      batch=cfg.batch,
      seq_len=cfg.seq_len,
      lr=cfg.lr,
      clip=cfg.clip,
      seed=cfg.seed,
      max_steps=cfg.max_steps,
      corpus=corpus.source,
    ),
  )


def _fresh_state(model: CharLM, cfg: TrainConfig) -> dict[str, Any]:
  params = model.init(jax.random.key(cfg.seed))
  return dict(
    params=params,
    opt_state=training.make_optimizer(cfg.lr, cfg.clip).init(params),
    carries=model.initial_carry(cfg.batch),
    step=0,
    key=jax.random.key(cfg.seed),
  )


def _read_metrics(path: Path, upto: int) -> list[dict[str, Any]]:
  """Metric lines with step <= upto (a torn last line from a crash is skipped)."""
  out = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        row = json.loads(line)
      except json.JSONDecodeError:
        continue
      if row.get("step", 0) <= upto:
        out.append(row)
  return out


def _resume(
  out_dir: Path, state: dict[str, Any], meta: dict[str, Any]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
  """The state saved in ``out_dir`` and its metric rows, after checking the
  checkpoint was written by a run with the same arguments."""
  state, saved = checkpoint.load(out_dir / CHECKPOINT, state)
  if saved != meta:
    diffs = [
      f"{k}: checkpoint {saved.get(k)!r} vs now {meta[k]!r}"
      for k in sorted(set(saved) | set(meta))
      if saved.get(k) != meta.get(k)
    ]
    raise checkpoint.CheckpointError(
      f"checkpoint {out_dir / CHECKPOINT} was written by a different run "
      f"({'; '.join(d[:200] for d in diffs)}); use the same arguments or a new --out"
    )
  return state, _read_metrics(out_dir / METRICS, int(state["step"]))


def restore_model(run_dir: Path | str) -> tuple[CharLM, CharLMParams, Vocab, dict[str, Any]]:
  """``(model, params, vocab, meta)`` from a run folder's checkpoint."""
  path = Path(run_dir) / CHECKPOINT
  meta = checkpoint.read_meta(path)
  config = dict(meta["model"])
  if "a_schedule" in config:  # stored as [a_max, steps]
    config["a_schedule"] = rj.SlopeAnnealing(*config["a_schedule"])
  model = char_lm(**config)
  t = meta["train"]
  cfg = TrainConfig(batch=t["batch"], lr=t["lr"], clip=t["clip"])
  state, _ = checkpoint.load(path, _fresh_state(model, cfg))
  return model, state["params"], Vocab(meta["vocab"]), meta


def train_char_lm(
  corpus: Corpus,
  model_cfg: ModelConfig | None = None,
  cfg: TrainConfig | None = None,
  *,
  out_dir: Path | None = None,
  resume: bool = False,
  progress: bool = True,
) -> CharLMRun:
  """Train a character LM on ``corpus`` and report validation bits per character.

  Args:
    corpus: the train and validation text.
    model_cfg: the model's shape (default `ModelConfig()`).
    cfg: the training setup (default `TrainConfig()`).
    out_dir: where ``metrics.jsonl`` and ``checkpoint.ckpt`` go (optional).
    resume: continue from ``out_dir``'s checkpoint (params, optimizer state,
      TBPTT carries, data position, RNG) to the same loss curve as an
      uninterrupted run.
    progress: show a progress bar.

  Returns:
    `CharLMRun`.
  """
  model_cfg = model_cfg or ModelConfig()
  cfg = cfg or TrainConfig()
  if cfg.minutes <= 0 and not cfg.max_steps:
    raise ValueError(f"minutes must be > 0 (got {cfg.minutes}) unless max_steps is set")
  if (resume or cfg.checkpoint_every) and (out_dir is None or not cfg.max_steps):
    raise ValueError(
      "checkpoints and --resume need an output folder and a step budget "
      "(--steps): a wall-clock schedule cannot be replayed exactly"
    )
  vocab = Vocab.from_text(corpus.train)
  train_ids, val_ids = vocab.encode(corpus.train), vocab.encode(corpus.val)
  model = char_lm(
    vocab.size,
    model_cfg.hidden,
    embed=model_cfg.embed,
    layers=model_cfg.layers,
    cell=model_cfg.cell,
    dropout=model_cfg.dropout,
    weight_drop=model_cfg.weight_drop,
    zoneout=model_cfg.zoneout,
    a_schedule=rj.slope_annealing(model_cfg.a_max, model_cfg.a_steps)
    if model_cfg.cell == "hmlstm"
    else None,
  )
  meta = _meta(vocab, model, cfg, corpus)
  state, history = _fresh_state(model, cfg), list[dict[str, Any]]()
  if resume:
    assert out_dir is not None
    state, history = _resume(out_dir, state, meta)

  optimizer = training.make_optimizer(cfg.lr, cfg.clip)
  train_step = training.make_train_step(model.loss, optimizer, has_aux=True)
  streams = stream_batches(train_ids, cfg.batch, cfg.seq_len, forever=False)
  regularised = model_cfg.dropout > 0 or model_cfg.weight_drop > 0 or model_cfg.zoneout > 0

  def step_fn(step: int, frac: float) -> dict[str, Any]:
    w = step % streams.count  # the data position
    if w == 0:
      state["carries"] = model.initial_carry(cfg.batch)  # a new pass over the streams
    x, y = streams(w)
    state["params"] = model.anneal(state["params"], step)  # the HM-LSTM's boundary slope
    lr = training.cosine_lr(cfg.lr, frac)
    opt_state = training.set_learning_rate(state["opt_state"], lr)
    # a regularised run draws its masks from the run's key and the step number,
    # so a resumed run draws the same ones
    key = (jax.random.fold_in(state["key"], step),) if regularised else ()
    out = train_step(
      state["params"], opt_state, jnp.asarray(x), jnp.asarray(y), state["carries"], *key
    )
    state.update(params=out.params, opt_state=out.opt_state, carries=out.aux, step=step + 1)
    return dict(loss=out.loss, bpc=out.loss / LN2, grad_norm=out.grad_norm, lr=lr)

  def save(steps_done: int) -> None:
    if out_dir is not None and (
      steps_done == -1 or (cfg.checkpoint_every and steps_done % cfg.checkpoint_every == 0)
    ):
      checkpoint.save(out_dir / CHECKPOINT, state, meta)

  t0 = time.perf_counter()
  with contextlib.ExitStack() as stack:
    metrics_file = None
    if out_dir is not None:
      io.atomic_write_text(out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))
      metrics_file = stack.enter_context(open(out_dir / METRICS, "a"))

    def log(row: dict[str, Any]) -> None:
      history.append(row)
      if metrics_file is not None:
        metrics_file.write(json.dumps(row) + "\n")
        metrics_file.flush()

    result = training.run_loop(
      step_fn,
      steps=cfg.max_steps or None,
      minutes=None if cfg.max_steps else cfg.minutes,
      start=int(state["step"]),
      log_every=cfg.log_every,
      progress=progress,
      desc=f"{model_cfg.cell} H={model_cfg.hidden}",
      on_log=log,
      after_step=save,
    )
  jax.block_until_ready(state["params"])
  train_seconds = time.perf_counter() - t0  # the device's work included
  save(-1)
  return CharLMRun(
    model,
    state["params"],
    vocab,
    evaluate_bpc(model, state["params"], val_ids),
    math.log2(vocab.size),
    result.steps,
    train_seconds,
    history,
  )

"""Training a character-level language model: the demo and ``rnnjax train``.

Adam with global-norm clipping and a cosine learning-rate decay
(`rnnjax.apps.training`), truncated BPTT with the carry passed between
consecutive windows of parallel streams, data parallel over the visible
devices (the streams split among them), a step or wall-clock budget, and
Orbax checkpoints (`rnnjax.apps.checkpoint`) from which a killed run resumes
to the same loss curve.

Resuming (``resume=True``, ``rnnjax train --resume``):

* the arguments that define the model and the data stream (the model's
  shape, the corpus and its vocabulary, batch, window, learning rate,
  clipping, seed) must be those of the run; each one that differs is named
  with both values;
* ``max_steps`` (``--steps``) may grow: a larger budget extends a finished
  run, and the cosine learning-rate decay then follows the new budget from
  the checkpoint's step on (the rate rises where the old budget ended, a warm
  restart, and decays to its floor at the new end); the same budget as a
  finished run trains nothing; a smaller one than the checkpoint's step is
  refused;
* the device count may change (Orbax restores onto the new shardings); the
  curve then differs from the uninterrupted one by float32 reduction order.

A new run into a folder that holds checkpoints is refused (``--resume``
continues it; a new ``--out`` starts elsewhere) unless ``overwrite=True``
(the demo, whose runs follow the wall clock and cannot be resumed).

A run holds its folder while it writes to it (`hold`, a file lock): a second
run into the same folder is refused at once, naming the holder's PID.

A damaged newest step (`rnnjax.apps.checkpoint.DamagedCheckpointError`) is
not resumed from, nor skipped silently: the error names the older intact
steps and says how to resume from the newest of them (move the damaged step
folder away); `restore_model` names them with ``--step``, which reads one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

import rnnjax as rj
from rnnjax.apps import checkpoint, io, training
from rnnjax.apps.data import Corpus, Vocab, stream_batches
from rnnjax.apps.models.lm import CharLM, CharLMParams, char_lm

LN2 = math.log(2.0)
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
  boundary_penalty: float = 0.0  # the HM-LSTM's boundary-rate term λ (char_lm), not the paper's
  boundary_estimator: str = "straight_through"  # or "reinforce" (char_lm)


class TrainConfig(NamedTuple):
  """How the char-LM is trained.

  With ``max_steps`` the run is deterministic (the learning rate decays by
  step) and can checkpoint and resume; otherwise it runs for ``minutes`` of
  wall clock with the decay following the clock. ``devices`` (default: all
  visible) must divide ``batch``; ``keep_checkpoints`` is Orbax's retention.
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
  devices: int | None = None
  keep_checkpoints: int = 2


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
  devices: int = 1
  resumed_from: int | None = None  # the checkpoint's step, when resumed


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


def _model(**config: Any) -> CharLM:
  """``char_lm(**config)``, one model per configuration in a process, so that
  its jitted functions (sampling, evaluation) compile once for all the runs
  and commands of the process that use it (tests, notebooks)."""
  if config.get("a_schedule") is None:
    config.pop("a_schedule", None)
  return _char_lm_of(json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=8)
def _char_lm_of(config_json: str) -> CharLM:
  config = json.loads(config_json)
  if "a_schedule" in config:  # [a_max, steps], as the model's config stores it
    config["a_schedule"] = rj.SlopeAnnealing(*config["a_schedule"])
  return char_lm(**config)


def _fresh_state(model: CharLM, cfg: TrainConfig) -> dict[str, Any]:
  params = model.init(jax.random.key(cfg.seed))
  return dict(
    params=params,
    opt_state=training.make_optimizer(cfg.lr, cfg.clip).init(params),
    carries=model.initial_carry(cfg.batch),
    key=jax.random.key(cfg.seed),
  )


def _placed(state: dict[str, Any], mesh: jax.sharding.Mesh) -> dict[str, Any]:
  """``state`` on the mesh: the carries split along the batch, the rest replicated."""
  rep = training.replicated(mesh)
  return dict(
    params=training.put(state["params"], rep),
    opt_state=training.put(state["opt_state"], rep),
    carries=training.put(state["carries"], training.batch_sharded(mesh, 0)),
    key=training.put(state["key"], rep),
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


# saved arguments a resumed run may change: the step budget (a larger one extends the run)
_EXTENSIBLE = frozenset({("train", "max_steps")})

_FLAGS = {
  ("train", "corpus"): "--text",
  ("model", "a_schedule"): "--a-max/--a-steps",
  ("model", "vocab_size"): "the vocabulary size (from --text)",
}


def _flag(path: tuple[str, ...]) -> str:
  """The option of ``rnnjax train`` that sets a saved argument."""
  if path in _FLAGS:
    return _FLAGS[path]
  return "--" + path[-1].replace("_", "-") if path[0] in ("model", "train") else path[-1]


def _flat(meta: dict[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  out: dict[tuple[str, ...], Any] = {}
  for k, v in meta.items():
    if isinstance(v, dict):
      out.update(_flat(v, (*prefix, k)))
    else:
      out[(*prefix, k)] = v
  return out


def _run_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
  """Each argument of the run that differs between a checkpoint's meta and
  this call's, named by its option with both values, in full (the vocabulary,
  a string of every character, by its size and the characters that differ)."""
  a, b = _flat(saved), _flat(now)
  out = []
  for path in sorted(set(a) | set(b)):
    if path in _EXTENSIBLE or a.get(path) == b.get(path):
      continue
    if path == ("model", "vocab_size") and a.get(("vocab",)) != b.get(("vocab",)):
      continue  # said with the vocabulary
    if path == ("vocab",) and isinstance(a.get(path), str) and isinstance(b.get(path), str):
      old, new = set(a[path]), set(b[path])
      out.append(
        f"the vocabulary (from --text): the checkpoint's has {len(a[path])} characters, "
        f"this corpus's {len(b[path])}; only in the checkpoint's {sorted(old - new)!r}, "
        f"only in this corpus's {sorted(new - old)!r}"
      )
    else:
      missing = "(not set)"
      out.append(
        f"{_flag(path)}: checkpoint {a.get(path, missing)!r}, now {b.get(path, missing)!r}"
      )
  return out


def _resume_hint(
  e: checkpoint.DamagedCheckpointError, out_dir: Path
) -> checkpoint.DamagedCheckpointError:
  """``e``, of the newest step, with the older intact steps and what to do: a
  resumed run does not fall back to an older step by itself (the damaged step
  would stay in the folder, and the run would skip saving at its step), it
  says how to resume from the newest intact one."""
  e.with_intact(checkpoint.intact_steps(out_dir, below=int(e.where.name)))
  if e.intact:
    hint = (
      f"to resume from step {e.intact[0]}, move {e.where} out of {e.where.parent} (or "
      "delete it) and run again"
    )
  else:
    hint = "start the run again in a new --out"
  e.args = (f"{e}; {hint}",)
  return e


def _check_resumable(out_dir: Path, meta: dict[str, Any]) -> int:
  """The step to resume ``out_dir`` from (its newest); raise unless that step
  is intact and was written with the arguments in ``meta``."""
  where = out_dir / checkpoint.FOLDER
  step = checkpoint.latest_step(out_dir)
  if step is None:
    raise checkpoint.CheckpointError(
      f"--resume: {out_dir} holds no checkpoint (looked for {where}); start the run "
      "without --resume"
    )
  try:
    saved = checkpoint.read_meta(out_dir, step)
  except checkpoint.DamagedCheckpointError as e:
    raise _resume_hint(e, out_dir) from None
  diffs = _run_differences(saved, meta)
  if diffs:
    raise checkpoint.CheckpointError(
      f"checkpoint {where} was written by a different run: {'; '.join(diffs)}; resume with "
      "the checkpoint's arguments, or train into a new --out"
    )
  return step


def _resume(
  out_dir: Path, state: dict[str, Any], max_steps: int, step: int | None = None
) -> tuple[dict[str, Any], int, list[dict[str, Any]]]:
  """The state saved in ``out_dir`` at ``step`` (default: the newest), read into
  ``state``'s structure and shardings, its step and its metric rows."""
  try:
    restored = checkpoint.restore(out_dir, state, step)
  except checkpoint.DamagedCheckpointError as e:
    raise _resume_hint(e, out_dir) from None
  if restored.step > max_steps:
    raise checkpoint.CheckpointError(
      f"checkpoint {out_dir / checkpoint.FOLDER} is at step {restored.step}, past --steps "
      f"{max_steps}: give --steps {restored.step} to keep the run as it is, or more to extend it"
    )
  return restored.state, restored.step, _read_metrics(out_dir / METRICS, restored.step)


def restore_model(
  run_dir: Path | str, step: int | None = None
) -> tuple[CharLM, CharLMParams, Vocab, dict[str, Any]]:
  """``(model, params, vocab, meta)`` from a run folder's newest checkpoint (or
  ``step``'s), on this process's first device (for sampling and analysis).

  Raises:
    CheckpointError: no checkpoint or no such step.
    DamagedCheckpointError: a damaged step; reading the newest, the error
      names the older intact steps and ``--step``, which reads one.
  """
  if step is None:
    step = checkpoint.latest_step(run_dir)
  try:
    return _restore_model(Path(run_dir), step)
  except checkpoint.DamagedCheckpointError as e:
    if step is not None and step == checkpoint.latest_step(run_dir):
      e.with_intact(checkpoint.intact_steps(run_dir, below=step))
      if e.intact:
        e.args = (f"{e}; read one with --step {e.intact[0]}",)
    raise e from None


def _restore_model(
  run_dir: Path, step: int | None
) -> tuple[CharLM, CharLMParams, Vocab, dict[str, Any]]:
  meta = checkpoint.read_meta(run_dir, step)
  model = _model(**meta["model"])
  t = meta["train"]
  cfg = TrainConfig(batch=t["batch"], lr=t["lr"], clip=t["clip"])
  mesh = training.make_mesh(1)
  restored = checkpoint.restore(run_dir, _placed(_fresh_state(model, cfg), mesh), step)
  return model, training.to_local(restored.state["params"]), Vocab(meta["vocab"]), meta


def train_char_lm(
  corpus: Corpus,
  model_cfg: ModelConfig | None = None,
  cfg: TrainConfig | None = None,
  *,
  out_dir: Path | None = None,
  resume: bool = False,
  overwrite: bool = False,
  progress: bool = True,
  monitor: Callable[[int, CharLM, CharLMParams], None] | None = None,
) -> CharLMRun:
  """Train a character LM on ``corpus`` and report validation bits per character.

  Args:
    corpus: the train and validation text.
    model_cfg: the model's shape (default `ModelConfig()`).
    cfg: the training setup (default `TrainConfig()`).
    out_dir: where ``metrics.jsonl`` and the ``checkpoints`` folder go (optional).
    resume: continue from ``out_dir``'s newest checkpoint (params, optimizer
      state, TBPTT carries, data position, RNG) to the same loss curve as an
      uninterrupted run; see the module docstring for what may change.
    overwrite: replace the checkpoints of a run already in ``out_dir``
      instead of refusing to start.
    progress: show a progress bar.
    monitor: called as ``monitor(steps_done, model, params)`` after every step (its
      time counts against a wall-clock budget; return at once on most steps).

  Returns:
    `CharLMRun`, its params on this process's first device.

  Raises:
    ValueError: a batch that does not divide by the devices, a budget or
      folder that does not allow checkpoints.
    CheckpointError: ``out_dir`` holds a run and neither ``resume`` nor
      ``overwrite`` is set; or, resuming, no checkpoint, a damaged one, or one
      written with other arguments (each named with both values).
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
  mesh = training.make_mesh(cfg.devices)
  training.check_batch(cfg.batch, mesh)
  vocab = Vocab.from_text(corpus.train)
  train_ids, val_ids = vocab.encode(corpus.train), vocab.encode(corpus.val)
  model = _model(
    vocab_size=vocab.size,
    hidden=model_cfg.hidden,
    embed=model_cfg.embed,
    layers=model_cfg.layers,
    cell=model_cfg.cell,
    dropout=model_cfg.dropout,
    weight_drop=model_cfg.weight_drop,
    zoneout=model_cfg.zoneout,
    a_schedule=rj.slope_annealing(model_cfg.a_max, model_cfg.a_steps)
    if model_cfg.cell == "hmlstm"
    else None,
    **(dict(boundary_penalty=model_cfg.boundary_penalty) if model_cfg.boundary_penalty else {}),
    **(
      dict(boundary_estimator=model_cfg.boundary_estimator)
      if model_cfg.boundary_estimator != "straight_through"
      else {}
    ),
  )
  meta = _meta(vocab, model, cfg, corpus)
  with contextlib.ExitStack() as held:
    if out_dir is not None:  # the folder is this run's until it returns
      held.enter_context(hold(out_dir))
    step: int | None = None
    if out_dir is not None and resume:  # refuse before any work on the devices
      step = _check_resumable(out_dir, meta)
    elif out_dir is not None:
      _claim(out_dir, overwrite)
    state, start, history = _placed(_fresh_state(model, cfg), mesh), 0, list[dict[str, Any]]()
    if resume:
      assert out_dir is not None and cfg.max_steps
      state, start, history = _resume(out_dir, state, cfg.max_steps, step)

    optimizer = training.make_optimizer(cfg.lr, cfg.clip)
    regularised = (  # a training pass: the loss takes a key
      model_cfg.dropout > 0
      or model_cfg.weight_drop > 0
      or model_cfg.zoneout > 0
      or model_cfg.boundary_penalty > 0
      or model_cfg.boundary_estimator != "straight_through"
    )
    # inputs and targets [T, B] split along B, carries [B, ...] along B, the key replicated
    train_step = training.make_train_step(
      model.loss,
      optimizer,
      has_aux=True,
      mesh=mesh,
      batch_axes=(1, 1, 0, *((None,) if regularised else ())),
      aux_axis=0,
    )
    streams = stream_batches(train_ids, cfg.batch, cfg.seq_len, forever=False)
    window_sharding = training.batch_sharded(mesh, 1)
    writer = jax.process_index() == 0  # one process writes the metrics

    def step_fn(step: int, frac: float) -> dict[str, Any]:
      w = step % streams.count  # the data position
      if w == 0:  # a new pass over the streams
        state["carries"] = training.put(
          model.initial_carry(cfg.batch), training.batch_sharded(mesh, 0)
        )
      x, y = (training.put(a, window_sharding) for a in streams(w))
      state["params"] = model.anneal(state["params"], step)  # the HM-LSTM's boundary slope
      lr = training.cosine_lr(cfg.lr, frac)
      opt_state = training.set_learning_rate(state["opt_state"], lr)
      # a regularised run draws its masks from the run's key and the step number,
      # so a resumed run draws the same ones
      key = (jax.random.fold_in(state["key"], step),) if regularised else ()
      out = train_step(state["params"], opt_state, x, y, state["carries"], *key)
      state.update(params=out.params, opt_state=out.opt_state, carries=out.aux)
      return dict(loss=out.loss, bpc=out.loss / LN2, grad_norm=out.grad_norm, lr=lr)

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
      saver = None
      if out_dir is not None:
        saver = stack.enter_context(
          checkpoint.Checkpoints(out_dir, every=cfg.checkpoint_every, keep=cfg.keep_checkpoints)
        )
      metrics_file: TextIO | None = None
      if out_dir is not None and writer:
        io.atomic_write_text(out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))
        metrics_file = stack.enter_context(open(out_dir / METRICS, "a"))

      def log(row: dict[str, Any]) -> None:
        row["devices"] = mesh.size
        history.append(row)
        if metrics_file is not None:
          metrics_file.write(json.dumps(row) + "\n")
          metrics_file.flush()

      def save(steps_done: int, force: bool = False) -> None:
        if saver is not None:
          saver.save(steps_done, state, meta, force=force)

      result = training.run_loop(
        step_fn,
        steps=cfg.max_steps or None,
        minutes=None if cfg.max_steps else cfg.minutes,
        start=start,
        log_every=cfg.log_every,
        progress=progress,
        desc=f"{model_cfg.cell} H={model_cfg.hidden} on {mesh.size} device"
        + ("s" if mesh.size > 1 else ""),
        on_log=log,
        after_step=(
          save if monitor is None else functools.partial(_monitored, save, monitor, model, state)
        ),
      )
      jax.block_until_ready(state["params"])
      train_seconds = time.perf_counter() - t0  # the device's work included
      save(result.steps, force=True)
    # leaving the stack waited for the last asynchronous save
    params = training.to_local(state["params"])
    return CharLMRun(
      model,
      params,
      vocab,
      evaluate_bpc(model, params, val_ids),
      math.log2(vocab.size),
      result.steps,
      train_seconds,
      history,
      mesh.size,
      start if resume else None,
    )


def _monitored(
  save: Callable[[int], None],
  monitor: Callable[[int, CharLM, CharLMParams], None],
  model: CharLM,
  state: dict[str, Any],
  steps_done: int,
) -> None:
  save(steps_done)
  monitor(steps_done, model, state["params"])


@contextlib.contextmanager
def hold(out_dir: Path) -> Iterator[Path]:
  """Hold the run folder ``out_dir`` while the block writes to it
  (`rnnjax.apps.io.hold_folder`): another process that asks for it is refused
  at once, naming this one's PID.

  The processes of one multi-process run (`jax.distributed`) write to one
  folder on purpose: process 0 holds it for all of them, and tells the others
  whether it could, so that all of them go on or all stop with the error.

  Raises:
    FolderInUseError: another run holds ``out_dir``.
    OSError: ``out_dir`` cannot be created or written.
  """
  if jax.process_count() == 1:
    with io.hold_folder(out_dir):
      yield out_dir
    return
  with contextlib.ExitStack() as stack:
    failed: Exception | None = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(io.hold_folder(out_dir))
      except Exception as e:  # held elsewhere, or not writable: every process stops
        failed = e
    ok = multihost_utils.broadcast_one_to_all(np.int32(failed is None))
    if failed is not None:
      raise failed
    if not int(ok):
      raise io.FolderInUseError(
        f"{out_dir}: process 0 of this run could not hold the run folder (its error says why)"
      )
    yield out_dir


def _claim(out_dir: Path, overwrite: bool) -> None:
  """Refuse to start a new run in a folder that holds one (or, with
  ``overwrite``, delete its checkpoints)."""
  step = checkpoint.latest_step(out_dir)
  if step is None:
    return
  if not overwrite:
    raise checkpoint.CheckpointError(
      f"{out_dir} already holds a run (a checkpoint at step {step}); continue it with "
      "--resume, or start this run in a new --out"
    )
  if jax.process_index() == 0:
    checkpoint.remove(out_dir)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("rnnjax: old checkpoints removed")

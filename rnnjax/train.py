"""Training loops with optax: Adam, global-norm clipping (Pascanu et al. 2013),
truncated BPTT with the carry passed between consecutive windows, a
wall-clock budget and a tqdm progress bar."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from rnnjax import checkpoint, io
from rnnjax.data import Corpus, Vocab, stream_batches
from rnnjax.models.charlm import char_lm

LN2 = math.log(2.0)


class CharLMRun(NamedTuple):
  """What `train_char_lm` returns."""
  model: Any
  params: Any
  vocab: Vocab
  val_bpc: float
  baseline_bpc: float
  steps: int
  train_seconds: float
  sample: str
  history: list


def make_optimizer(lr: float = 3e-3, clip: float = 1.0):
  """Adam after clipping the gradient to global norm ``clip``; the learning
  rate is an injected hyperparameter so a wall-clock schedule can set it."""
  return optax.chain(optax.clip_by_global_norm(clip),
                     optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)(learning_rate=lr))


def cosine_lr(lr: float, progress: float, floor: float = 0.05) -> float:
  """Cosine decay from ``lr`` to ``floor * lr`` as ``progress`` goes 0 -> 1
  (progress is the fraction of the step or wall-clock budget used)."""
  progress = min(max(progress, 0.0), 1.0)
  return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def set_lr(opt_state, value: float):
  """Return ``opt_state`` with the injected learning rate set to ``value``."""
  clip_state, adam_state = opt_state
  hp = dict(adam_state.hyperparams)
  hp["learning_rate"] = jnp.asarray(value, jnp.asarray(hp["learning_rate"]).dtype)
  return (clip_state, adam_state._replace(hyperparams=hp))


def make_train_step(model, optimizer):
  """A jitted step: loss, gradients, global norm, update; the carry is passed
  on with its gradient stopped (truncated BPTT)."""

  @jax.jit
  def train_step(params, opt_state, carries, x, y):
    (loss, carries), grads = jax.value_and_grad(model.loss, has_aux=True)(params, x, y, carries)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, jax.lax.stop_gradient(carries), loss, optax.tree.norm(grads)

  return train_step


def evaluate_bpc(model, params, ids: np.ndarray, batch: int = 32, seq_len: int = 256) -> float:
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


CHECKPOINT = "checkpoint.ckpt"
METRICS = "metrics.jsonl"


def _read_metrics(path: Path, upto: int) -> list:
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


def model_meta(vocab: Vocab, config: dict) -> dict:
  return dict(vocab=vocab.chars, model=config)


def restore_model(run_dir):
  """``(model, params, vocab, meta)`` from a run folder's checkpoint."""
  path = Path(run_dir) / CHECKPOINT
  meta = checkpoint.read_meta(path)
  vocab = Vocab(meta["vocab"])
  cfg = meta["model"]
  model = char_lm(cfg["vocab_size"], cfg["hidden"], embed=cfg["embed"], layers=cfg["layers"],
                  cell=cfg["cell"])
  params = model.init(jax.random.key(0))
  t = meta["train"]
  template = dict(params=params, opt_state=make_optimizer(t["lr"], t["clip"]).init(params),
                  carries=model.initial_carry(t["batch"]), step=0, key=jax.random.key(0))
  state, _ = checkpoint.load(path, template)
  return model, state["params"], vocab, meta


def train_char_lm(corpus: Corpus, *, hidden: int = 256, embed: int = 64, layers: int = 1,
                  cell: str = "lstm", batch: int = 32, seq_len: int = 64, lr: float = 5e-3,
                  clip: float = 1.0, minutes: float = 3.0, max_steps: Optional[int] = None,
                  seed: int = 0, temperature: float = 0.8, sample_chars: int = 400,
                  prime: str = "def ", progress: bool = True, out_dir=None,
                  checkpoint_every: int = 0, resume: bool = False,
                  log_every: int = 10) -> CharLMRun:
  """Train a character LM on ``corpus``, then report validation bits per
  character and a sample.

  With ``max_steps`` the run is deterministic (the learning rate decays by
  step), checkpoints every ``checkpoint_every`` steps into ``out_dir``, and
  ``resume=True`` continues from the last checkpoint (params, optimizer state,
  TBPTT carries, data position, RNG) to the same loss curve as an
  uninterrupted run. Without it, training runs for ``minutes`` of wall clock
  with the decay following the clock. Metrics go to ``out_dir/metrics.jsonl``.
  """
  if minutes <= 0 and not max_steps:
    raise ValueError(f"minutes must be > 0 (got {minutes}) unless max_steps is set")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  if (resume or checkpoint_every) and (out_dir is None or not max_steps):
    raise ValueError("checkpoints and --resume need an output folder and a step budget "
                     "(--steps): a wall-clock schedule cannot be replayed exactly")
  vocab = Vocab.from_text(corpus.train)
  train_ids, val_ids = vocab.encode(corpus.train), vocab.encode(corpus.val)
  model = char_lm(vocab.size, hidden, embed=embed, layers=layers, cell=cell)
  meta = model_meta(vocab, model.config)
  meta["train"] = dict(batch=batch, seq_len=seq_len, lr=lr, clip=clip, seed=seed,
                       max_steps=max_steps, corpus=corpus.source)
  optimizer = make_optimizer(lr, clip)
  params = model.init(jax.random.key(seed))
  state = dict(params=params, opt_state=optimizer.init(params),
               carries=model.initial_carry(batch), step=0, key=jax.random.key(seed))
  out_dir = None if out_dir is None else Path(out_dir)
  history = []
  if resume:
    state, saved = checkpoint.load(out_dir / CHECKPOINT, state)
    if saved != meta:
      diffs = [f"{k}: checkpoint {saved.get(k)!r} vs now {meta[k]!r}"
               for k in sorted(set(saved) | set(meta)) if saved.get(k) != meta.get(k)]
      raise checkpoint.CheckpointError(
          f"checkpoint {out_dir / CHECKPOINT} was written by a different run "
          f"({'; '.join(d[:200] for d in diffs)}); use the same arguments or a new --out")
    history = _read_metrics(out_dir / METRICS, int(state["step"]))
  if out_dir is not None:
    io.atomic_write_text(out_dir / METRICS, "".join(json.dumps(h) + "\n" for h in history))
    metrics_file = open(out_dir / METRICS, "a")
  step_fn = make_train_step(model, optimizer)
  streams = stream_batches(train_ids, batch, seq_len, forever=False)
  windows = streams.count

  params, opt_state, carries = state["params"], state["opt_state"], state["carries"]
  steps = int(state["step"])
  budget = minutes * 60.0 if minutes > 0 and not max_steps else math.inf
  t0 = time.perf_counter()
  bar = tqdm(total=max_steps or round(budget), initial=steps if max_steps else 0,
             unit="step" if max_steps else "s", disable=not progress, dynamic_ncols=True,
             desc=f"{cell} H={hidden}")
  try:
    while True:
      w = steps % windows                                 # the data position
      if w == 0:
        carries = model.initial_carry(batch)             # a new pass over the streams
      x, y = streams(w)
      frac = steps / max_steps if max_steps else (time.perf_counter() - t0) / budget
      current_lr = cosine_lr(lr, frac)
      opt_state = set_lr(opt_state, current_lr)
      params, opt_state, carries, loss, gnorm = step_fn(params, opt_state, carries,
                                                        jnp.asarray(x), jnp.asarray(y))
      steps += 1
      if steps % log_every == 0 or steps == 1:
        loss = float(loss)
        now = time.perf_counter() - t0
        row = dict(step=steps, seconds=round(now, 3), loss=loss, bpc=loss / LN2,
                   grad_norm=float(gnorm), lr=current_lr)
        history.append(row)
        if out_dir is not None:
          metrics_file.write(json.dumps(row) + "\n")
          metrics_file.flush()
        bar.set_postfix(loss=f"{loss:.3f}", bpc=f"{loss / LN2:.3f}", gnorm=f"{float(gnorm):.2f}")
        bar.update((steps if max_steps else min(int(now), bar.total)) - bar.n)
      if checkpoint_every and steps % checkpoint_every == 0:
        checkpoint.save(out_dir / CHECKPOINT, dict(
            params=params, opt_state=opt_state, carries=carries, step=steps,
            key=state["key"]), meta)
      if (max_steps and steps >= max_steps) or time.perf_counter() - t0 >= budget:
        break
  finally:
    bar.close()
    if out_dir is not None:
      metrics_file.close()
  jax.block_until_ready(params)
  train_seconds = time.perf_counter() - t0
  if out_dir is not None:
    checkpoint.save(out_dir / CHECKPOINT, dict(params=params, opt_state=opt_state,
                                               carries=carries, step=steps, key=state["key"]), meta)

  val_bpc = evaluate_bpc(model, params, val_ids)
  sample = generate(model, params, vocab, prime, sample_chars, temperature, seed + 1)
  return CharLMRun(model, params, vocab, val_bpc, math.log2(vocab.size), steps,
                   train_seconds, sample, history)


def generate(model, params, vocab: Vocab, prime: str = "def ", n: int = 400,
             temperature: float = 0.8, seed: int = 0) -> str:
  """``prime`` followed by ``n`` sampled characters."""
  if not prime:
    raise ValueError("prime must be at least one character")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  out = model.sample(params, jax.random.key(seed), jnp.asarray(vocab.encode(prime)), n,
                     temperature)
  return prime + vocab.decode(np.asarray(out))

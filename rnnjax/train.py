"""Training loops with optax: Adam, global-norm clipping (Pascanu et al. 2013),
truncated BPTT with the carry passed between consecutive windows, a
wall-clock budget and a tqdm progress bar."""

from __future__ import annotations

import math
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

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
                     optax.inject_hyperparams(optax.adam)(learning_rate=lr))


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
  for w, x, y in stream_batches(ids, batch, seq_len):
    if w == 0 and count:
      break
    loss, carries = loss_fn(params, jnp.asarray(x), jnp.asarray(y), carries)
    total += float(loss) * x.size
    count += x.size
  return total / count / LN2


def train_char_lm(corpus: Corpus, *, hidden: int = 256, embed: int = 64, layers: int = 1,
                  cell: str = "lstm", batch: int = 32, seq_len: int = 128, lr: float = 3e-3,
                  clip: float = 1.0, minutes: float = 3.0, max_steps: Optional[int] = None,
                  seed: int = 0, temperature: float = 0.8, sample_chars: int = 400,
                  prime: str = "def ", progress: bool = True) -> CharLMRun:
  """Train a character LM on ``corpus`` for ``minutes`` of wall clock (or
  ``max_steps``), then report validation bits per character and a sample."""
  if minutes <= 0 and not max_steps:
    raise ValueError(f"minutes must be > 0 (got {minutes}) unless max_steps is set")
  if temperature <= 0:
    raise ValueError(f"temperature must be > 0, got {temperature}")
  vocab = Vocab.from_text(corpus.train)
  train_ids, val_ids = vocab.encode(corpus.train), vocab.encode(corpus.val)
  model = char_lm(vocab.size, hidden, embed=embed, layers=layers, cell=cell)
  key = jax.random.key(seed)
  params = model.init(key)
  optimizer = make_optimizer(lr, clip)
  opt_state = optimizer.init(params)
  step_fn = make_train_step(model, optimizer)
  batches = stream_batches(train_ids, batch, seq_len)
  carries = model.initial_carry(batch)

  budget = minutes * 60.0 if minutes > 0 else math.inf
  history, steps, t0 = [], 0, time.perf_counter()
  bar = tqdm(total=max_steps or round(budget), unit="step" if max_steps else "s",
             disable=not progress, dynamic_ncols=True, desc=f"{cell} H={hidden}")
  while True:
    w, x, y = next(batches)
    if w == 0:
      carries = model.initial_carry(batch)             # a new pass over the streams
    progress_frac = steps / max_steps if max_steps else (time.perf_counter() - t0) / budget
    current_lr = cosine_lr(lr, progress_frac)
    opt_state = set_lr(opt_state, current_lr)
    params, opt_state, carries, loss, gnorm = step_fn(params, opt_state, carries,
                                                      jnp.asarray(x), jnp.asarray(y))
    steps += 1
    if steps % 10 == 0 or steps == 1:
      loss = float(loss)
      now = time.perf_counter() - t0
      history.append(dict(step=steps, seconds=round(now, 3), loss=loss, bpc=loss / LN2,
                          grad_norm=float(gnorm), lr=current_lr))
      bar.set_postfix(step=steps, loss=f"{loss:.3f}", bpc=f"{loss / LN2:.3f}")
      bar.update((steps if max_steps else min(int(now), bar.total)) - bar.n)
    if (max_steps and steps >= max_steps) or time.perf_counter() - t0 >= budget:
      break
  jax.block_until_ready(params)
  train_seconds = time.perf_counter() - t0
  bar.close()

  val_bpc = evaluate_bpc(model, params, val_ids)
  prime_ids = jnp.asarray(vocab.encode(prime))
  out = model.sample(params, jax.random.key(seed + 1), prime_ids, sample_chars, temperature)
  sample = prime + vocab.decode(np.asarray(out))
  return CharLMRun(model, params, vocab, val_bpc, math.log2(vocab.size), steps,
                   train_seconds, sample, history)

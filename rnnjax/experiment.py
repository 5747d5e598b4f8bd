"""Train a cell on a long-range task (adding, copy) and report against the baseline."""

from __future__ import annotations

import math
import time
from typing import Optional

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm

from rnnjax import init as inits
from rnnjax import tasks
from rnnjax.cells import elman, gru, lstm
from rnnjax.scan import scan

TASKS = ("adding", "copy")
CELLS = ("elman", "gru", "lstm")


def make_cell(name: str, hidden: int):
  if name not in CELLS:
    raise ValueError(f"unknown cell {name!r}; expected one of {list(CELLS)}")
  return {"elman": elman, "gru": gru, "lstm": lstm}[name](hidden)


def task_spec(task: str, T: int):
  """(batch function, input size, output size, baseline)."""
  if task == "adding":
    return tasks.adding, 2, 1, tasks.adding_baseline(T)
  if task == "copy":
    return tasks.copy_memory, tasks.COPY_CLASSES, tasks.COPY_CLASSES, tasks.copy_baseline(T)
  raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")


def init_model(cell, key, input_size: int, output_size: int):
  kr, kh = jax.random.split(key)
  return {"rnn": cell.init(kr, input_size),
          "head": {"w": inits.lecun_normal()(kh, (cell.hidden_size, output_size)),
                   "b": jnp.zeros((output_size,))}}


def task_loss(cell, task: str):
  """``loss(params, batch) -> scalar``: MSE of the final state's readout
  (adding) or mean per-step cross-entropy (copy)."""

  def loss(params, batch):
    carry, ys = scan(cell, params["rnn"], batch.xs)
    head = params["head"]
    if task == "adding":
      pred = (cell.output(carry) @ head["w"])[:, 0] + head["b"][0]
      return jnp.mean((pred - batch.targets) ** 2)
    logits = ys @ head["w"] + head["b"][None, None]
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, batch.targets))

  return loss


def train_loop(train_step, params, opt_state, key, steps, minutes, desc, log_every, progress):
  """Run ``train_step(params, opt_state, key_i) -> (params, opt_state, loss, grad_norm)``
  for ``steps`` steps or ``minutes`` of wall clock, with a progress bar; returns
  ``(params, opt_state, loss_curve, steps_done)``."""
  if steps is None and minutes is None:
    raise ValueError("give steps or minutes")
  budget = math.inf if minutes is None else minutes * 60
  curve, t0, step = [], time.perf_counter(), 0
  bar = tqdm(total=steps, disable=not progress, desc=desc, dynamic_ncols=True)
  while (steps is None or step < steps) and time.perf_counter() - t0 < budget:
    params, opt_state, loss, gnorm = train_step(params, opt_state, jax.random.fold_in(key, step))
    step += 1
    bar.update(1)
    if step % log_every == 0 or step == 1:
      curve.append(dict(step=step, seconds=round(time.perf_counter() - t0, 2),
                        loss=float(loss), grad_norm=float(gnorm)))
      bar.set_postfix(loss=f"{float(loss):.4f}", gnorm=f"{float(gnorm):.2f}")
  bar.close()
  return params, opt_state, curve, step


def run_experiment(task: str, cell_name: str, T: int, *, hidden: int = 128, batch: int = 50,
                   lr: float = 1e-3, clip: float = 1.0, steps: Optional[int] = None,
                   minutes: Optional[float] = 3.0, seed: int = 0, test_batch: int = 1000,
                   log_every: int = 25, progress: bool = True) -> dict:
  """Train ``cell_name`` on ``task`` at length ``T``; returns a JSON-ready dict
  with ``loss_curve``, ``final_test_loss``, ``baseline`` and the gradient norms."""
  make_batch, I, O, baseline = task_spec(task, T)
  cell = make_cell(cell_name, hidden)
  key = jax.random.key(seed)
  params = init_model(cell, key, I, O)
  opt = optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))
  opt_state = opt.init(params)
  loss_fn = task_loss(cell, task)

  @jax.jit
  def train_step(params, opt_state, key):
    b = make_batch(key, batch, T)
    loss, grads = jax.value_and_grad(loss_fn)(params, b)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

  test = make_batch(jax.random.fold_in(key, 10**6), test_batch, T)
  test_loss = jax.jit(loss_fn)
  t0 = time.perf_counter()
  params, opt_state, curve, step = train_loop(train_step, params, opt_state, key, steps, minutes,
                                              f"{task} T={T} {cell_name}", log_every, progress)
  final = float(test_loss(params, test))
  return dict(task=task, cell=cell_name, T=T, hidden=hidden, batch=batch, lr=lr, seed=seed,
              steps=step, train_seconds=round(time.perf_counter() - t0, 2),
              loss_curve=curve, final_test_loss=final, baseline=baseline,
              solved=final < 0.1 * baseline, params=params)


def exact_match(tokens, batch) -> jax.Array:
  """Per-example: the greedy decode equals the target up to and including EOS."""
  L = batch.tgt.shape[0]
  toks = tokens[:L]
  mask = jnp.arange(L)[:, None] < batch.tgt_len[None]
  return jnp.all(jnp.where(mask, toks == batch.tgt, True), axis=0)


def run_seq2seq(cell_name: str = "gru", max_len: int = 10, *, min_len: int = 1,
                hidden: int = 128, embed: int = 32, batch: int = 128, lr: float = 3e-3,
                clip: float = 1.0, steps: Optional[int] = 3000, minutes: Optional[float] = None,
                seed: int = 0, test_size: int = 1000, log_every: int = 50,
                progress: bool = True) -> dict:
  """Train an encoder-decoder to reverse digit strings; report exact-match
  accuracy of greedy decoding on held-out strings (test strings are masked out
  of every training batch, so none is ever trained on)."""
  from rnnjax.models.seq2seq import seq2seq

  enc, dec = make_cell(cell_name, hidden), make_cell(cell_name, hidden)
  model = seq2seq(enc, dec, tasks.REVERSE_VOCAB, embed)
  key = jax.random.key(seed)
  params = model.init(key)
  opt = optax.chain(optax.clip_by_global_norm(clip), optax.adam(lr))
  opt_state = opt.init(params)
  test = tasks.reverse_digits(jax.random.fold_in(key, 10**6), test_size, max_len, min_len)

  def unseen(b):   # [B]: True where the source string is not a test string
    same = jnp.all(b.src[:, :, None] == test.src[:, None, :], axis=0) & \
        (b.src_len[:, None] == test.src_len[None, :])
    return ~jnp.any(same, axis=1)

  @jax.jit
  def train_step(params, opt_state, k):
    b = tasks.reverse_digits(k, batch, max_len, min_len)
    b = b._replace(tgt_len=jnp.where(unseen(b), b.tgt_len, 0))   # held-out strings: no loss
    loss, grads = jax.value_and_grad(model.loss)(params, *b)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(grads)

  t0 = time.perf_counter()
  params, opt_state, curve, step = train_loop(train_step, params, opt_state, key, steps, minutes,
                                              f"reverse L<={max_len} {cell_name}", log_every,
                                              progress)
  toks = model.decode(params, test.src, test.src_len, max_len + 1)
  acc = float(jnp.mean(exact_match(toks, test)))
  return dict(task="reverse", cell=cell_name, T=max_len, hidden=hidden, batch=batch, lr=lr,
              seed=seed, steps=step, train_seconds=round(time.perf_counter() - t0, 2),
              loss_curve=curve, final_test_loss=float(model.loss(params, *test)),
              exact_match=acc, baseline=math.log(10), params=params)

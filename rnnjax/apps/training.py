"""The one home of training: the optimizer, the jitted train step and the loop.

Every application trains through these three pieces: the char-LM
(`rnnjax.apps.charlm`), the long-range and seq2seq experiments
(`rnnjax.apps.experiment`) and the tests.

* `make_optimizer`: Adam after global-norm clipping (Pascanu et al. 2013),
  the learning rate an injected hyperparameter so a schedule that follows the
  wall clock can set it (`set_learning_rate`);
* `make_train_step`: loss, gradients, global norm and update, jitted;
* `run_loop`: a step or wall-clock budget, metrics every ``log_every`` steps,
  a tqdm progress bar, and hooks for checkpoints and metric files.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from tqdm import tqdm


def make_optimizer(lr: float = 3e-3, clip: float = 1.0) -> optax.GradientTransformation:
  """Adam after clipping the gradient to global norm ``clip``.

  Args:
    lr: the (initial) learning rate.
    clip: the global-norm threshold.

  Returns:
    An optax transformation whose ``learning_rate`` `set_learning_rate` can change.
  """
  adam = optax.inject_hyperparams(optax.adam, hyperparam_dtype=jnp.float32)
  return optax.chain(optax.clip_by_global_norm(clip), adam(learning_rate=lr))


def set_learning_rate(opt_state: Any, value: float) -> Any:
  """``opt_state`` with its injected ``learning_rate`` set to ``value``, found by
  name wherever the optimizer keeps it."""
  return optax.tree_utils.tree_set(opt_state, learning_rate=jnp.asarray(value, jnp.float32))


def cosine_lr(lr: float, progress: float, floor: float = 0.05) -> float:
  """Cosine decay from ``lr`` to ``floor * lr`` as ``progress`` goes 0 -> 1
  (the fraction of the step or wall-clock budget used)."""
  progress = min(max(progress, 0.0), 1.0)
  return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


class StepOutput(NamedTuple):
  """What a train step returns."""

  params: Any
  opt_state: Any
  loss: jax.Array
  grad_norm: jax.Array
  aux: Any


def make_train_step(
  loss_fn: Callable[..., Any],
  optimizer: optax.GradientTransformation,
  *,
  has_aux: bool = False,
) -> Callable[..., StepOutput]:
  """A jitted ``step(params, opt_state, *batch) -> StepOutput``.

  Args:
    loss_fn: ``loss_fn(params, *batch) -> loss``, or ``(loss, aux)`` with
      ``has_aux`` (the char-LM's aux is the carry passed to the next window;
      its gradient is stopped: truncated BPTT).
    optimizer: an optax transformation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.

  Returns:
    The step; ``grad_norm`` is the global norm before clipping.
  """

  @jax.jit
  def step(params: Any, opt_state: Any, *batch: Any) -> StepOutput:
    value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
    loss, aux = value if has_aux else (value, None)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return StepOutput(params, opt_state, loss, optax.tree.norm(grads), jax.lax.stop_gradient(aux))

  return step


class LoopResult(NamedTuple):
  """What `run_loop` returns."""

  steps: int
  seconds: float
  history: list[dict[str, Any]]


def run_loop(
  step_fn: Callable[[int, float], dict[str, Any]],
  *,
  steps: int | None = None,
  minutes: float | None = None,
  start: int = 0,
  log_every: int = 10,
  desc: str = "",
  progress: bool = True,
  on_log: Callable[[dict[str, Any]], None] | None = None,
  after_step: Callable[[int], None] | None = None,
) -> LoopResult:
  """Call ``step_fn(step, progress)`` until a step or wall-clock budget is spent.

  Args:
    step_fn: runs training step ``step`` (0-based) given ``progress``, the
      fraction of the budget used, and returns its metrics (scalars; read
      only at logging steps, so the device is not synchronised every step).
    steps: stop after this many steps in all (counting ``start``).
    minutes: stop after this much wall clock (when ``steps`` is None it also
      sets ``progress``).
    start: the first step (a resumed run).
    log_every: record metrics at step 1 and every ``log_every`` steps.
    desc: the progress bar's label.
    progress: show the progress bar.
    on_log: called with each metrics row ``{step, seconds, **metrics}``.
    after_step: called with the number of steps done after each step.

  Returns:
    `LoopResult` with the steps done, the seconds spent and the rows logged.
  """
  if steps is None and minutes is None:
    raise ValueError("run_loop: give a step budget (steps=) or a wall-clock one (minutes=)")
  budget = math.inf if minutes is None else minutes * 60.0
  bar = tqdm(
    total=steps if steps else round(budget),
    initial=start if steps else 0,
    unit="step" if steps else "s",
    disable=not progress,
    dynamic_ncols=True,
    desc=desc,
  )
  history: list[dict[str, Any]] = []
  done, t0 = start, time.perf_counter()
  try:
    while (steps is None or done < steps) and time.perf_counter() - t0 < budget:
      frac = done / steps if steps else (time.perf_counter() - t0) / budget
      metrics = step_fn(done, frac)
      done += 1
      if done % log_every == 0 or done == 1:
        now = time.perf_counter() - t0
        row = dict(step=done, seconds=round(now, 3), **{k: float(v) for k, v in metrics.items()})
        history.append(row)
        if on_log is not None:
          on_log(row)
        bar.set_postfix({k: f"{v:.4g}" for k, v in row.items() if k not in ("step", "seconds")})
        bar.update((done if steps else min(int(now), bar.total)) - bar.n)
      if after_step is not None:
        after_step(done)
  finally:
    bar.close()
  return LoopResult(done, time.perf_counter() - t0, history)

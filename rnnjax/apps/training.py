"""The one home of training: the optimizer, the jitted train step, data
parallelism and the loop.

Every application trains through these pieces: the char-LM
(`rnnjax.apps.charlm`), the long-range and seq2seq experiments
(`rnnjax.apps.experiment`) and the tests.

* `make_optimizer`: Adam after global-norm clipping (Pascanu et al. 2013),
  the learning rate an injected hyperparameter so a schedule that follows the
  wall clock can set it (`set_learning_rate`);
* `make_mesh`, `check_batch`, `replicated`, `batch_sharded`, `put`,
  `to_local`: data parallelism on `jax.sharding` (below);
* `make_train_step`: loss, gradients, global norm and update, jitted (over a
  mesh when one is given);
* `run_loop`: a step or wall-clock budget, metrics every ``log_every`` steps,
  a tqdm progress bar, and hooks for checkpoints and metric files.

Data parallelism. A run on ``N`` devices uses a one-axis
`jax.sharding.Mesh` (axis ``"batch"``, `MESH_AXIS`); the batch, and the
truncated-BPTT carries passed between windows, are split along their batch
axis with a `jax.sharding.NamedSharding` (``B / N`` sequences per device);
params and optimizer state are replicated. The gradient reduction is left to
XLA: the train step is the one-device step, jitted with these
``in_shardings`` and ``out_shardings``, and XLA's SPMD partitioner sees that a
mean over a sharded batch feeds replicated outputs and inserts the all-reduce
of the gradients (and of the loss) itself. We chose this over `jax.shard_map`
because the model code stays as written for one device (no ``psum`` or
``pmean`` to place by hand, no per-device loss normalisation to get right),
one code path serves 1 and ``N`` devices, and the same step scales to
several processes (`jax.distributed.initialize`) unchanged. The price is
that the reduction order of the batch mean differs from one device's, so
curves on 1 and ``N`` devices agree to float32 rounding, not bit for bit; a
run on a fixed device count is bit-reproducible, resumed or not.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from tqdm import tqdm

MESH_AXIS = "batch"
"""The name of the data-parallel mesh's one axis."""


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
  # a NumPy scalar, not a jax.Array: jit places it as the step's shardings say,
  # on one device or replicated over a mesh of several processes
  return optax.tree_utils.tree_set(opt_state, learning_rate=np.asarray(value, np.float32))


def cosine_lr(lr: float, progress: float, floor: float = 0.05) -> float:
  """Cosine decay from ``lr`` to ``floor * lr`` as ``progress`` goes 0 -> 1
  (the fraction of the step or wall-clock budget used)."""
  progress = min(max(progress, 0.0), 1.0)
  return lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_mesh(devices: int | None = None) -> Mesh:
  """A one-axis data-parallel mesh over ``devices`` devices (default: all visible).

  With several processes (`jax.distributed.initialize`) the mesh takes the same
  number of devices from each process, so ``devices`` must be a multiple of
  the process count.

  Args:
    devices: how many devices; None for all of `jax.devices`.

  Returns:
    A `jax.sharding.Mesh` with the one axis `MESH_AXIS`, in automatic
    (XLA-propagated) sharding mode.
  """
  visible, processes = jax.device_count(), jax.process_count()
  n = visible if devices is None else devices
  backend = jax.default_backend()
  if not 1 <= n <= visible:
    raise ValueError(
      f"devices={n} but {visible} {backend} device{'s are' if visible > 1 else ' is'} "
      f"visible; use --devices between 1 and {visible} (on CPU, "
      "XLA_FLAGS=--xla_force_host_platform_device_count=N makes N devices)"
    )
  if n % processes:
    raise ValueError(
      f"devices={n} does not divide among {processes} processes: each process gives the "
      f"mesh the same number of its devices; use --devices {processes * max(1, n // processes)}"
    )
  per_process = n // processes
  chosen = [d for p in range(processes) for d in _devices_of(p)[:per_process]]
  return Mesh(np.array(chosen), (MESH_AXIS,), axis_types=(AxisType.Auto,))


def _devices_of(process: int) -> list[jax.Device]:
  return [d for d in jax.devices() if d.process_index == process]


def check_batch(batch: int, mesh: Mesh) -> None:
  """Raise a ValueError naming both numbers when ``batch`` does not divide
  among the mesh's devices (each must get the same number of sequences)."""
  n = mesh.size
  if batch % n:
    fits = max(d for d in range(1, n + 1) if batch % d == 0)
    raise ValueError(
      f"batch {batch} does not divide by {n} devices: each device takes an equal share of "
      f"the batch; use --batch {batch + n - batch % n} (a multiple of {n}) or --devices {fits}"
    )


def replicated(mesh: Mesh) -> NamedSharding:
  """The sharding of params and optimizer state: a full copy on every device."""
  return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh, axis: int) -> NamedSharding:
  """The sharding of an array whose axis ``axis`` is the batch: split over the
  mesh, e.g. ``axis=1`` for time-major ``[T, B, ...]`` inputs, ``axis=0`` for
  ``[B, H]`` carries."""
  return NamedSharding(mesh, PartitionSpec(*(None,) * axis, MESH_AXIS))


def put(tree: Any, sharding: jax.sharding.Sharding) -> Any:
  """Host values (NumPy, Python numbers, one-device arrays, typed PRNG keys)
  placed as global arrays with ``sharding``.

  Every process holds the same host value (the same seed, the same data
  window) and gives the mesh only the shards on its own devices
  (`jax.make_array_from_callback`), so this works with one process or several.
  """

  def one(x: Any) -> jax.Array:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      data = one(jax.random.key_data(x))
      return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    value = np.asarray(x)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])

  return jax.tree.map(one, tree)


def to_local(tree: Any) -> Any:
  """Global arrays as arrays on this process's first device, for evaluation
  and sampling after training: a replicated array gives its local copy, a
  sharded one is gathered from all processes."""
  device = jax.local_devices()[0]

  def one(x: Any) -> Any:
    if not isinstance(x, jax.Array):
      return x
    if x.is_fully_replicated:
      return jax.device_put(x.addressable_data(0), device)
    if x.is_fully_addressable:
      return jax.device_put(x, device)
    return jax.device_put(multihost_utils.process_allgather(x, tiled=True), device)

  return jax.tree.map(one, tree)


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
  mesh: Mesh | None = None,
  batch_axes: Sequence[int | None] = (),
  aux_axis: int | None = None,
) -> Callable[..., StepOutput]:
  """A jitted ``step(params, opt_state, *batch) -> StepOutput``.

  Args:
    loss_fn: ``loss_fn(params, *batch) -> loss``, or ``(loss, aux)`` with
      ``has_aux`` (the char-LM's aux is the carry passed to the next window;
      its gradient is stopped: truncated BPTT).
    optimizer: an optax transformation.
    has_aux: whether ``loss_fn`` returns ``(loss, aux)``.
    mesh: a data-parallel mesh (`make_mesh`); None jits for one device.
    batch_axes: with ``mesh``, one entry per ``batch`` argument: the axis
      split over the mesh, or None for an argument replicated like the
      params (a PRNG key, a step number).
    aux_axis: with ``mesh``, the batch axis of every leaf of ``aux`` (the
      carries: 0), or None to replicate it.

  Returns:
    The step; ``grad_norm`` is the global norm before clipping. Over a mesh,
    params, optimizer state, loss and norm come back replicated and ``aux``
    split like the batch; the gradient all-reduce is XLA's (see the module
    docstring).
  """

  def step(params: Any, opt_state: Any, *batch: Any) -> StepOutput:
    value, grads = jax.value_and_grad(loss_fn, has_aux=has_aux)(params, *batch)
    loss, aux = value if has_aux else (value, None)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return StepOutput(params, opt_state, loss, optax.tree.norm(grads), jax.lax.stop_gradient(aux))

  if mesh is None:
    return jax.jit(step)
  rep = replicated(mesh)
  data = [rep if a is None else batch_sharded(mesh, a) for a in batch_axes]
  aux_sharding = rep if aux_axis is None else batch_sharded(mesh, aux_axis)
  return jax.jit(
    step,
    in_shardings=(rep, rep, *data),
    out_shardings=StepOutput._make([rep, rep, rep, rep, aux_sharding]),
  )


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

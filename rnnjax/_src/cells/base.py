"""What every cell supplies: the public `Cell` contract and its private `Compiled` form.

A cell is not an object with state. Its public contract is three pure
functions (``init``, ``step``, ``initial_carry``), its sizes, a name and
declared properties (the activation, the recurrent and input weights' params
fields). `rnnjax.custom_cell` compiles its hints into the private `Compiled`
record (optax style: a record of pure functions), whose slots the generic
runner (`rnnjax.scan`), the generic hand-written BPTT (`rnnjax.bptt_scan`),
the Jacobian tools and the Pallas kernel call. Each function's contract is a
`typing.Protocol` in `rnnjax._src.typing`. The helpers the cells' files share
(dtypes, matmuls, the affine projection, zero carries, memoized factories)
live here too.

A cell is static to JAX: `Cell` is registered with
``jax.tree_util.register_static``, so it is a pytree with no leaves. It can be
passed straight to a jitted function (``jax.jit(rj.scan)(cell, params, xs)``),
where it is part of the cache key (equal cells share one compilation), and
``jax.tree.map`` over ``(cell, params)`` layers maps only the params.

Weight layout is row-vector (``x @ w_x``): ``w_x: [I, kH]``, ``w_h: [H, kH]``,
``b: [kH]`` with the ``k`` gate blocks side by side along the last axis.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec

import jax
import jax.numpy as jnp

from rnnjax._src import typing as t
from rnnjax._src.activations import Activation


class Compiled(NamedTuple):
  """The private compiled form of a cell: the slots the engine runs.

  `rnnjax.custom_cell` compiles a cell's hints into it; the kernel
  (`rnnjax._src.kernel`), the hand-written BPTT (`rnnjax._src.bptt`), the
  Jacobian tools and the Pallas kernel read it. It is not part of the public
  contract: a user writes ``init``, ``step`` and ``initial_carry`` (and, to go
  faster, hints), never these slots.

  Attributes:
    project: `ProjectFn`, ``project(params, x) -> zx``, hoisted out of the loop
      (the identity without a projection hint).
    fast_step: `FastStepFn`, ``fast_step(params, carry, zx) -> (carry, residuals)``.
    backward_step: `BackwardStepFn`, the local backward of the hand-written BPTT.
    step_output: `StepOutputFn`, ``y = step_output(carry, residuals)``.
    recurrent_grads: `RecurrentGradsFn`, the recurrent weights' gradients over
      all rows, or None.
    rows_are_dzx: the rows `backward_step` returns for ``recurrent_grads`` are
      its ``dzx`` (declared by the hint), so the BPTT stacks them once.
    state_jacobian: `StateJacobianFn`, the closed-form ``∂s_t/∂s_{t-1}``, or
      None for ``jax.jacfwd`` of the step.
    state_diagonal: `StateDiagonalFn`, the closed-form diagonal of
      ``∂s_t/∂s_{t-1}`` (quasi-DEER's), or None: it is read off ``jax.jacfwd``.
    pallas: the per-step math the Pallas kernel runs on ``[Bb, Hp]`` tiles
      (a `rnnjax._src.cells.tiles.Rule`), declared by a built-in cell's
      factory; None: the cell runs on the XLA kernel only.
    gates: k, the number of ``[H]`` blocks of ``zx`` (1 without a projection).
  """

  project: t.ProjectFn
  fast_step: t.FastStepFn
  backward_step: t.BackwardStepFn
  step_output: t.StepOutputFn
  recurrent_grads: t.RecurrentGradsFn | None = None
  rows_are_dzx: bool = False
  state_jacobian: t.StateJacobianFn | None = None
  state_diagonal: t.StateDiagonalFn | None = None
  pallas: Any = None
  gates: int = 1


_SLOTS = frozenset(Compiled._fields)


@jax.tree_util.register_static
@dataclasses.dataclass(frozen=True)
class Cell:
  """A recurrent cell: three pure functions, its sizes and declared properties.

  Build one with `rnnjax.custom_cell` (which also makes `rnnjax.elman`,
  `rnnjax.gru`, `rnnjax.lstm` and the other built-ins) or `rnnjax.make_cell`;
  run it with `rnnjax.scan`.

  A cell is a static pytree node with no leaves: a jitted function may take
  it as an ordinary argument, and ``jax.tree.map`` passes over it. Two cells
  are equal (and hash alike) when their fields are: the same functions, by
  identity, and equal options. The built-in factories return the same cell
  for the same arguments, so ``rj.lstm(8) == rj.lstm(8)`` and a jitted
  function compiles once for both; ``cell._replace(...)`` with a new
  function is a different cell and compiles anew.

  Attributes:
    name: the cell's kind (``"elman"``, ``"gru"``, ``"lstm"``), for display.
    hidden_size: O, the size of the output ``y`` (H for the built-ins): what
      a stacked layer above sees.
    state_size: S, the size of the flattened carry (``H``; ``2H`` for the LSTM).
    init: `InitFn`, ``init(key, input_size) -> params``.
    initial_carry: `InitialCarryFn`, ``initial_carry(batch_shape, dtype) -> carry``.
    step: `StepFn`, ``step(params, carry, x) -> (carry, y)``.
    output: `OutputFn`, the output a head reads off a final carry (its first
      leaf, ``h``).
    compiled: the private `Compiled` form the engine runs (not the contract;
      its slots are also readable as ``cell.project``, ``cell.fast_step``, ...).
    options: ``(name, value)`` pairs the factory was called with, for display.
    dtype: the compute dtype, or None for the inputs' result type.
    activation: declared when the step is ``h_t = f(zx_t + h_{t-1} @ W)``
      with ``W`` the params field ``recurrent_weight``, so the step Jacobian
      is ``diag(f'(z_t)) Wᵀ``; the Jacobian tools then give the lecture's
      bound and Pascanu's conditions from its ``γ``.
    recurrent_weight: the params field of the recurrent weight ``W: [H, kH]``
      (``"w_h"`` for the built-ins), or None.
    input_weight: the params field of the input weight ``[I, kH]`` (``"w_x"``
      for the built-ins), whose first axis the checks compare with the
      inputs' feature size, or None.
  """

  name: str
  hidden_size: int
  state_size: int
  init: t.InitFn
  initial_carry: t.InitialCarryFn
  step: t.StepFn
  output: t.OutputFn
  compiled: Compiled
  options: tuple[tuple[str, Any], ...] = ()
  dtype: t.DType | None = None
  activation: Activation | None = None
  recurrent_weight: str | None = None
  input_weight: str | None = None

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
    return f"rnnjax.{self.name}({self.hidden_size}{', ' + opts if opts else ''})"

  def _replace(self, **changes: Any) -> Cell:
    """A copy with ``changes``; a slot of `Compiled` (``fast_step=``, ...)
    replaces that slot of the compiled form."""
    slots = {k: changes.pop(k) for k in list(changes) if k in _SLOTS}
    if slots:
      changes["compiled"] = self.compiled._replace(**slots)
    return dataclasses.replace(self, **changes)

  # The compiled form's slots, read-only, for tools and tests that call them.
  @property
  def project(self) -> t.ProjectFn:
    """The compiled ``project`` slot (`Compiled`)."""
    return self.compiled.project

  @property
  def fast_step(self) -> t.FastStepFn:
    """The compiled ``fast_step`` slot (`Compiled`)."""
    return self.compiled.fast_step

  @property
  def backward_step(self) -> t.BackwardStepFn:
    """The compiled ``backward_step`` slot (`Compiled`)."""
    return self.compiled.backward_step

  @property
  def recurrent_grads(self) -> t.RecurrentGradsFn | None:
    """The compiled ``recurrent_grads`` slot (`Compiled`)."""
    return self.compiled.recurrent_grads

  @property
  def state_jacobian(self) -> t.StateJacobianFn | None:
    """The compiled ``state_jacobian`` slot (`Compiled`)."""
    return self.compiled.state_jacobian

  @property
  def state_diagonal(self) -> t.StateDiagonalFn | None:
    """The compiled ``state_diagonal`` slot (`Compiled`)."""
    return self.compiled.state_diagonal

  @property
  def gates(self) -> int:
    """k, the number of ``[H]`` blocks of ``zx`` (`Compiled`)."""
    return self.compiled.gates


def field(params: t.Params, name: str, what: str, label: str) -> t.Array:
  """``params[name]`` or ``params.name``, with an error naming the fields.

  Args:
    params: a params pytree whose top level is a dict or a NamedTuple.
    name: the declared field.
    what: the caller, for the error.
    label: the declaration, for the error (``"RecurrentMatmul(weight='W')"``).

  Returns:
    The field's value.

  Raises:
    TypeError: the params are neither a dict nor a NamedTuple.
    ValueError: the params have no such field.
  """
  if isinstance(params, dict):
    if name in params:
      return params[name]
    fields = sorted(params)
  elif hasattr(params, "_fields"):
    if name in params._fields:
      return getattr(params, name)
    fields = list(params._fields)
  else:
    raise TypeError(
      f"{what}: {label} reads the params field {name!r}, so the params must be a dict or "
      f"a NamedTuple, got {type(params).__name__}"
    )
  raise ValueError(f"{what}: {label} names no params field; the params have {fields}")


def input_size(cell: Cell, params: t.Params, what: str) -> int | None:
  """The input size the params expect: the first axis of the cell's declared
  ``input_weight``, or None when the cell declares none."""
  if cell.input_weight is None:
    return None
  w = field(params, cell.input_weight, what, f"{cell!r}'s input_weight={cell.input_weight!r}")
  return int(jnp.shape(w)[0])


def recurrent_weight(cell: Cell, params: t.Params, what: str) -> t.Array:
  """The params' recurrent weight ``W`` as the cell declares it (`Cell.recurrent_weight`).

  Raises:
    ValueError: the cell declares none.
  """
  if cell.recurrent_weight is None:
    raise ValueError(
      f"{what}: {cell!r} declares no recurrent_weight (the params field of W); "
      f"pass recurrent_weight= to rnnjax.custom_cell"
    )
  return field(params, cell.recurrent_weight, what, f"recurrent_weight={cell.recurrent_weight!r}")


_P = ParamSpec("_P")


def memoized(factory: Callable[_P, Cell]) -> Callable[_P, Cell]:
  """``factory`` returning the same `Cell` for equal (hashable) arguments.

  Each call of a factory builds new closures, and a cell compares its
  functions by identity, so without this ``rj.lstm(8) != rj.lstm(8)`` and a
  jitted function taking the cell would compile again for each. Calls with
  unhashable arguments build a fresh cell, uncached.
  """
  cached: Callable[..., Cell] = functools.lru_cache(maxsize=256, typed=True)(factory)

  @functools.wraps(factory)
  def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Cell:
    try:
      hash((args, tuple(kwargs.items())))
    except TypeError:
      return factory(*args, **kwargs)
    return cached(*args, **kwargs)

  return wrapper


def compute_dtypes(dtype: t.DType | None, *arrays: Any) -> tuple[Any, Any]:
  """(compute, accumulate) dtypes: compute is `dtype` or the arrays' result
  type; accumulation is float32 for 16-bit compute types, else compute."""
  compute = jnp.dtype(dtype) if dtype is not None else jnp.result_type(*arrays)
  acc = jnp.float32 if jnp.finfo(compute).bits < 32 else compute
  return compute, jnp.dtype(acc)


def mm(a: t.Array, b: t.Array, acc: Any) -> t.Array:
  """``a @ b`` accumulated in ``acc`` (float32 for bfloat16 inputs)."""
  return jnp.matmul(a, b, preferred_element_type=acc)


def bias(b: t.Array, like: t.Array, acc: Any) -> t.Array:
  """``b: [n]`` cast to ``acc`` and shaped to broadcast against ``like: [..., n]``
  without rank promotion (the tests run with ``jax_numpy_rank_promotion="raise"``)."""
  return b.astype(acc).reshape((1,) * (like.ndim - 1) + b.shape)


def row(v: t.Array, like: t.Array) -> t.Array:
  """``v: [n]`` shaped to broadcast against ``like: [..., n]`` (no rank promotion)."""
  return v.reshape((1,) * (like.ndim - 1) + v.shape)


def affine(x: t.Array, w: t.Array, b: t.Array) -> t.Array:
  """``x @ w + b`` for ``x: [..., n]``, ``w: [n, m]``, ``b: [m]``."""
  z = x @ w
  return z + row(b, z)


def zeros_carry(H: int) -> t.InitialCarryFn:
  """``initial_carry`` of a cell whose carry is ``h: [..., H]`` (zeros);
  `rnnjax.custom_cell` checks the ``batch_shape``."""

  def initial_carry(batch_shape: t.Shape = (), dtype: t.DType = jnp.float32) -> t.Array:
    return jnp.zeros((*batch_shape, H), dtype)

  return initial_carry


def affine_projection(dtype: t.DType | None) -> t.ProjectFn:
  """The input projection of every built-in cell: ``zx = x @ w_x + b``.

  ``x: [..., I]`` is flattened to one ``[N, I] @ [I, kH]`` matmul, so the
  kernel's hoisted projection over ``[T, B, I]`` and a single step's share
  this code.
  """

  def project(params: t.Params, x: t.Array) -> t.Array:
    cdt, acc = compute_dtypes(dtype, x, params.w_x)
    lead = x.shape[:-1]
    zx = mm(x.reshape(-1, x.shape[-1]).astype(cdt), params.w_x.astype(cdt), acc)  # [N, kH]
    return (zx + bias(params.b, zx, acc)).reshape(*lead, zx.shape[-1])  # [..., kH]

  return project


def step_from(project: t.ProjectFn, forward: Any) -> t.StepFn:
  """``step(params, carry, x)``: ``forward(params, carry, project(params, x))``
  (a `rnnjax.LocalBackward`'s forward, returning ``(carry, y, residuals)``)
  without the residuals."""

  def step(params: t.Params, carry: t.Carry, x: t.Array) -> tuple[t.Carry, t.Array]:
    carry, y, _ = forward(params, carry, project(params, x))
    return carry, y

  return step

"""What every cell supplies: the `Cell` NamedTuple of pure functions.

A cell is not an object with state. It is a record of pure functions (optax
style) that the generic runner (`rnnjax.scan`), the generic hand-written BPTT
(`rnnjax.bptt_scan`) and the Jacobian tools (`rnnjax.jacobian`) call. Each
slot's contract is a `typing.Protocol` in `rnnjax._src.typing`.

A cell is static to JAX: `Cell` is registered with
``jax.tree_util.register_static``, so it is a pytree with no leaves. It can be
passed straight to a jitted function (``jax.jit(rj.scan)(cell, params, xs)``),
where it is part of the cache key (equal cells share one compilation), and
``jax.tree.map`` over ``(cell, params)`` layers maps only the params.

Weight layout is row-vector (``x @ w_x``): ``w_x: [I, kH]``, ``w_h: [H, kH]``,
``b: [kH]`` with the ``k`` gate blocks side by side along the last axis.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, ParamSpec

import jax
import jax.numpy as jnp

from rnnjax._src import typing as t
from rnnjax._src.activations import Activation


@jax.tree_util.register_static
class Cell(NamedTuple):
  """A recurrent cell as a NamedTuple of pure functions.

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
    hidden_size: H.
    gates: k, the number of ``[H]`` blocks of the pre-activation.
    state_size: S, the size of the flattened carry (``H``; ``2H`` for the LSTM).
    init: `InitFn`, ``init(key, input_size) -> params``.
    initial_carry: `InitialCarryFn`, ``initial_carry(batch_shape, dtype) -> carry``.
    step: `StepFn`, ``step(params, carry, x) -> (carry, y)``; equal to
      ``fast_step`` after ``project``.
    project: `ProjectFn`, ``project(params, x) -> zx``, hoisted out of the loop.
    fast_step: `FastStepFn`, ``fast_step(params, carry, zx) -> (carry, residuals)``.
    backward_step: `BackwardStepFn`, the local backward of the hand-written BPTT.
    recurrent_grads: `RecurrentGradsFn`, the recurrent weights' gradients.
    state_jacobian: `StateJacobianFn`, the closed-form ``∂s_t/∂s_{t-1}``.
    output: `OutputFn`, the output a head reads off a final carry (its first
      leaf, ``h``).
    add_output_grad: `AddOutputGradFn`, the pair of cotangents the local
      backward receives.
    options: ``(name, value)`` pairs the factory was called with, for display.
    dtype: the compute dtype, or None for the inputs' result type.
    activation: set when the step is ``h_t = f(zx_t + h_{t-1} @ w_h)``, so
      the step Jacobian is ``diag(f'(z_t)) w_hᵀ``; the Jacobian tools then
      give the lecture's bound and Pascanu's conditions from its ``γ``.
    step_output: ``y = step_output(carry, residuals)``, a step's output (the
      ``y`` the step returned, kept in the residuals unless it is the carry's
      first leaf); None means ``y = output(carry)``.
  """

  name: str
  hidden_size: int
  gates: int
  state_size: int
  init: t.InitFn
  initial_carry: t.InitialCarryFn
  step: t.StepFn
  project: t.ProjectFn
  fast_step: t.FastStepFn
  backward_step: t.BackwardStepFn
  recurrent_grads: t.RecurrentGradsFn | None
  state_jacobian: t.StateJacobianFn | None
  output: t.OutputFn
  add_output_grad: t.AddOutputGradFn
  options: tuple[tuple[str, Any], ...] = ()
  dtype: t.DType | None = None
  activation: Activation | None = None
  step_output: t.StepOutputFn | None = None

  def __repr__(self) -> str:
    opts = ", ".join(f"{k}={v!r}" for k, v in self.options)
    return f"rnnjax.{self.name}({self.hidden_size}{', ' + opts if opts else ''})"


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

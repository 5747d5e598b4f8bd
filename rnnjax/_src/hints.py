"""Hints: what a cell may tell `rnnjax.custom_cell` to run as fast as the built-ins.

A cell is three functions (``init``, ``step``, ``initial_carry``). A hint is an
object that carries everything it needs, so hints compose by construction:

* one *step hint* (``fast=``), how the step runs and is differentiated:

  - `ProjectedStep`: an input projection hoisted out of the loop;
  - `MatmulStep`: a recurrent matmul whose weight gradient is one matmul over
    all rows (optionally after a projection);
  - `BackwardStep`: a hand-written local backward returning this step's
    params gradient (optionally after a projection);
  - `BackwardRows`: a hand-written local backward returning per-row arrays
    that its ``recurrent_grads`` turns into the recurrent weights' gradients
    (optionally after a projection);

* a *Jacobian hint* (``jacobian=``): `ClosedJacobian`, the closed-form
  ``∂s_t/∂s_{t-1}``;
* a *diagonal hint* (``diagonal=``): `ClosedDiagonal`, the closed-form diagonal
  of ``∂s_t/∂s_{t-1}``, which quasi-DEER and quasi-ELK (`rnnjax.parallel_scan`)
  use instead of taking it from S forward-mode derivatives.

Every pair is legal: each slot takes one object, and each object's fields are
all it needs. `compile_step` turns a step hint into the private `Compiled`
slots the kernel and the BPTT run. The keyword arguments of rnnjax 0.1
(``project=``, ``update=``, ``recurrent=``, ``backward=``, ``state_jacobian=``)
map onto these objects (`from_keywords`) for one release.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import dataflow
from rnnjax._src.cells.base import field
from rnnjax._src.shapes import describe
from rnnjax._src.typing import (
  Array,
  Carry,
  Params,
  ProjectFn,
  StateDiagonalFn,
  StateJacobianFn,
)

UpdateFn = Callable[..., tuple[Carry, Array]]
"""``update(params, carry, zx) -> (carry, y)``: a step after its input projection
(``update(params, carry, zx, zh)`` in a `MatmulStep`)."""


# ---------------------------------------------------------------- the public hints


class ProjectedStep(NamedTuple):
  """Step hint: the step is ``update(params, carry, project(params, x))``.

  `rnnjax.scan` then computes ``zx = project(params, x)`` for all ``T·B`` rows in
  one matmul, and its gradient (``dw_x``, ``db``, ``dX``) is one VJP over all rows
  instead of one per step. The local backward is ``jax.vjp`` of ``update``.

  Attributes:
    project: ``project(params, x) -> zx``, the part of the step that does not
      read the carry (e.g. ``x @ w_x + b``).
    update: ``update(params, carry, zx) -> (carry, y)``, the rest of the step.
  """

  project: ProjectFn
  update: UpdateFn


class MatmulStep(NamedTuple):
  """Step hint: the step reads one recurrent weight only through ``zh = read(carry) @ W``.

  The kernel computes ``zh`` itself and hands it to ``update``. The hand-written
  BPTT keeps each step's ``∂L/∂zh: [B, kH]`` instead of a per-step ``∂L/∂W`` and
  forms ``dW = read(carry_prev)ᵀ dZh`` as one matmul over all ``N = T·B`` rows;
  the rest of the backward is ``jax.vjp`` of ``update``.

  Attributes:
    weight: the params field holding ``W: [R, kH]`` (a NamedTuple attribute or a
      dict key at the top level of the params).
    update: ``update(params, carry, zx, zh) -> (carry, y)``, the step given ``zh``
      (and ``zx = project(params, x)``, or ``x`` itself without ``project``).
    read: ``read(carry) -> a: [B, R]``, the carry's part that multiplies ``W``;
      default the carry's first leaf (``h``).
    project: optional ``project(params, x) -> zx``, hoisted out of the loop.
  """

  weight: str
  update: UpdateFn
  read: Callable[[Carry], Array] | None = None
  project: ProjectFn | None = None


class BackwardStep(NamedTuple):
  """Step hint: a hand-written local backward that returns this step's params gradient.

  Attributes:
    forward: ``forward(params, carry, zx) -> (carry, y, residuals)``: the step
      after its input projection (``zx = project(params, x)``, or ``x``), also
      returning what ``backward`` needs (gate values, or None).
    backward: ``backward(params, carry_prev, carry, residuals, dcarry, dy) ->
      (dcarry_prev, dzx, dparams)``: from ``∂L/∂carry_t`` and ``∂L_t/∂y_t``, the
      gradients of the previous carry, of ``zx`` and of the params (a pytree
      like the params, this step's share; the reverse scan sums it).
    project: optional ``project(params, x) -> zx``, hoisted out of the loop.
  """

  forward: Callable[..., tuple[Carry, Array, Any]]
  backward: Callable[..., tuple[Carry, Array, Params]]
  project: ProjectFn | None = None


class BackwardRows(NamedTuple):
  """Step hint: a hand-written local backward whose recurrent weights' gradients
  are single matmuls over all rows.

  Attributes:
    forward: ``forward(params, carry, zx) -> (carry, y, residuals)``, as in
      `BackwardStep`.
    backward: ``backward(params, carry_prev, carry, residuals, dcarry, dy) ->
      (dcarry_prev, dzx, rows)``: ``rows`` are per-row arrays ``[B, ...]``,
      typically ``dzh``, the recurrent pre-activation's gradient.
    recurrent_grads: ``recurrent_grads(params, carry_prev, residuals, rows) ->
      {field: gradient}`` over all ``N = T·B`` rows at once (leaves
      ``[N, ...]``), e.g. ``{"w_h": H_prevᵀ dZh}``. Every params field the
      recurrence reads must be named, or the BPTT fails at trace time naming
      the leaf.
    project: optional ``project(params, x) -> zx``, hoisted out of the loop.
    rows_are_dzx: the ``rows`` are ``dzx`` itself (the recurrent and the
      input pre-activations are one), so the BPTT stacks them once.
  """

  forward: Callable[..., tuple[Carry, Array, Any]]
  backward: Callable[..., tuple[Carry, Array, Any]]
  recurrent_grads: Callable[..., dict[str, Array]]
  project: ProjectFn | None = None
  rows_are_dzx: bool = False


class ClosedJacobian(NamedTuple):
  """Jacobian hint: the closed-form step Jacobian, used instead of ``jax.jacfwd``.

  Attributes:
    fn: ``fn(params, carry, x) -> [S, S]``, ``∂s_t/∂s_{t-1}`` for one example
      (``carry`` unbatched, ``x: [I]``) over the flattened carry.
  """

  fn: StateJacobianFn


class ClosedDiagonal(NamedTuple):
  """Diagonal hint: the closed-form diagonal of the step Jacobian, for quasi-DEER.

  `rnnjax.parallel_scan` with ``method="quasi"`` or ``"quasi-elk"`` keeps only
  the diagonal of each step's Jacobian. Without this hint it reads it off
  ``jax.jacfwd`` of the step (S forward-mode derivatives at every step, the
  ``[S, S]`` Jacobian formed and all but its diagonal thrown away) or, for large
  ``T·B·S²``, from a loop of S JVPs. A closed form is typically ``O(S)`` or one
  ``[S, S]`` matmul per step, e.g. for ``h_t = tanh(z_t)``, ``z_t = x_t w_x +
  h_{t-1} w_h + b``: ``(1 − h_t²) ⊙ diag(w_h)``.

  Attributes:
    fn: ``fn(params, carry, x) -> [S]``, ``∂s_t[i]/∂s_{t-1}[i]`` for one example
      (``carry`` unbatched, ``x: [I]``) over the flattened carry (its leaves
      concatenated in order, as `ClosedJacobian`'s).
  """

  fn: StateDiagonalFn


StepHint = ProjectedStep | MatmulStep | BackwardStep | BackwardRows
STEP_HINTS = (ProjectedStep, MatmulStep, BackwardStep, BackwardRows)


# ---------------------------------------------------------------- rnnjax 0.1's keywords


class RecurrentMatmul(NamedTuple):
  """rnnjax 0.1's recurrent-matmul hint (``recurrent=`` with ``update=``); use
  `MatmulStep`, which carries its ``update`` and ``project``.

  Attributes:
    weight: the params field holding ``W: [R, kH]``.
    read: ``read(carry) -> a: [B, R]``; default the carry's first leaf.
  """

  weight: str
  read: Callable[[Carry], Array] | None = None


class LocalBackward(NamedTuple):
  """rnnjax 0.1's hand-written backward (``backward=``); use `BackwardStep`
  (third return value: this step's params gradient) or `BackwardRows` (per-row
  arrays for ``recurrent_grads``), which split its two meanings.

  Attributes:
    forward: ``forward(params, carry, zx) -> (carry, y, residuals)``.
    backward: ``backward(params, carry_prev, carry, residuals, dcarry, dy) ->
      (dcarry_prev, dzx, grads)``, ``grads`` as in `BackwardStep` without
      ``recurrent_grads`` and as in `BackwardRows` with it.
    recurrent_grads: as in `BackwardRows`, or None.
  """

  forward: Callable[..., tuple[Carry, Array, Any]]
  backward: Callable[..., tuple[Carry, Array, Any]]
  recurrent_grads: Callable[..., dict[str, Array]] | None = None


def from_keywords(
  what: str,
  project: ProjectFn | None,
  update: UpdateFn | None,
  recurrent: RecurrentMatmul | None,
  backward: LocalBackward | None,
) -> StepHint | None:
  """rnnjax 0.1's keyword arguments as one step hint, with its errors for the
  combinations that do not make one."""
  for label, fn in (("project", project), ("update", update)):
    if fn is not None and not callable(fn):
      raise TypeError(f"{what}: {label} must be callable, got {type(fn).__name__}")
  if recurrent is not None and not isinstance(recurrent, RecurrentMatmul):
    raise TypeError(
      f"{what}: recurrent must be rnnjax.RecurrentMatmul(weight, read), got "
      f"{type(recurrent).__name__}"
    )
  if backward is not None and not isinstance(backward, LocalBackward):
    raise TypeError(
      f"{what}: backward must be rnnjax.LocalBackward(forward, backward, recurrent_grads), "
      f"got {type(backward).__name__}"
    )
  if recurrent is not None and backward is not None:
    raise ValueError(
      f"{what}: recurrent= and backward= do not combine: a hand-written backward returns "
      f"the recurrent pre-activation's gradient itself and gives the weight's gradient in "
      f"its recurrent_grads (rnnjax.BackwardRows(forward, backward, recurrent_grads))"
    )
  if recurrent is not None and update is None:
    raise ValueError(
      f"{what}: the recurrent-matmul hint needs update(params, carry, zx, zh) -> (carry, y), "
      f"the step given zh = read(carry) @ params[{recurrent.weight!r}]"
    )
  if backward is not None and update is not None:
    raise ValueError(
      f"{what}: update= is unused with backward=: the LocalBackward's forward(params, carry, "
      f"zx) -> (carry, y, residuals) is the step after the projection; pass one of the two"
    )
  if project is not None and update is None and backward is None:
    raise ValueError(
      f"{what}: the projection hint needs update(params, carry, zx) -> (carry, y) (or a "
      f"LocalBackward, whose forward takes zx): pass project with update, or neither"
    )
  if update is not None and project is None and recurrent is None:
    raise ValueError(
      f"{what}: update is the step after a hint (project, or recurrent): pass "
      f"project(params, x) -> zx with it, or only step"
    )
  if backward is not None:
    if backward.recurrent_grads is None:
      return BackwardStep(backward.forward, backward.backward, project)
    return BackwardRows(backward.forward, backward.backward, backward.recurrent_grads, project)
  if recurrent is not None:
    assert update is not None
    return MatmulStep(recurrent.weight, update, recurrent.read, project)
  if project is not None:
    assert update is not None
    return ProjectedStep(project, update)
  return None


# ---------------------------------------------------------------- compiling a step hint


class StepSlots(NamedTuple):
  """What a step hint compiles to: the `Compiled` slots of the step."""

  project: ProjectFn
  fast_step: Any
  backward_step: Any
  recurrent_grads: Any = None
  rows_are_dzx: bool = False


def _identity(params: Params, x: Array) -> Array:
  return x  # no projection hint: the step sees x itself


def compile_step(
  what: str, hint: StepHint | None, step: Any, checked: Callable[..., Any], output: Any
) -> StepSlots:
  """The kernel's slots for ``hint`` (None: the step alone).

  Args:
    what: the cell, for errors.
    hint: the step hint.
    step: the (checked) step.
    checked: ``checked(fn, label, arity)`` wraps a user function in the step's
      shape checks.
    output: the carry's output (its first leaf).

  Returns:
    The `StepSlots`.
  """

  def kept(new: Carry, y: Array) -> Array | None:
    """``y`` for the residuals, or None when the step returned the carry's first
    leaf itself as ``y``: the scan keeps that already, and the output is then not
    stored twice (a trace-time deduplication, exact by construction)."""
    return None if y is jax.tree.leaves(new)[0] else y

  if hint is None:
    fast, back = _hint_free(step, kept)
    return StepSlots(_identity, fast, back)
  project = _identity if hint.project is None else hint.project
  if isinstance(hint, ProjectedStep):
    fast, back = _hint_free(checked(hint.update, "update"), kept)
    return StepSlots(project, fast, back)
  if isinstance(hint, MatmulStep):
    fast, back, rule = _recurrent(what, checked(hint.update, "update"), hint, output, kept)
    return StepSlots(project, fast, back, rule)
  if isinstance(hint, BackwardStep):
    fast, back = _hand_written(what, checked(hint.forward, "forward", 3), hint, kept)
    return StepSlots(project, fast, back)
  fast, back, rule = _hand_written_rows(what, checked(hint.forward, "forward", 3), hint, kept)
  return StepSlots(project, fast, back, rule, hint.rows_are_dzx)


def _per_step_vjp(fn: Any, params: Params, args: tuple[Any, ...], cotangent: Any) -> Any:
  """``fn(params, *args)``'s VJP, the params part only for the leaves ``fn``
  reads: ``(dleaves, *dargs)`` with ``dleaves`` one entry per params leaf (None
  where ``fn`` does not read it), or None when it reads none."""
  leaves, treedef = jax.tree.flatten(params)
  read = dataflow.params_read(fn, params, *args)
  idx = [i for i, r in enumerate(read) if r]

  def on_read(sel: list[Array], *a: Any) -> Any:
    full = list(leaves)
    for i, leaf in zip(idx, sel, strict=True):
      full[i] = leaf
    return fn(jax.tree.unflatten(treedef, full), *a)

  _, vjp = jax.vjp(on_read, [leaves[i] for i in idx], *args)
  dsel, *dargs = vjp(cotangent)
  if not idx:
    return None, *dargs
  dleaves: list[Array | None] = [None] * len(leaves)
  for i, d in zip(idx, dsel, strict=True):
    dleaves[i] = d
  return dleaves, *dargs


def _hint_free(recurrence: Any, kept: Any) -> tuple[Any, Any]:
  """The kernel's step and local backward from ``recurrence(params, carry, zx)``
  (``update``, or ``step`` itself): the backward re-runs it under ``jax.vjp``."""

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    new, y = recurrence(params, carry, zx)
    return new, (kept(new, y), zx)

  def backward_step(params: Params, prev: Carry, carry: Carry, res: Any, d: Any) -> Any:
    _, zx = res
    dleaves, dprev, dzx = _per_step_vjp(recurrence, params, (prev, zx), d)
    return dprev, dzx, None, dleaves

  return fast_step, backward_step


def _recurrent(
  what: str, update: Any, hint: MatmulStep, output: Any, kept: Any
) -> tuple[Any, Any, Any]:
  """`MatmulStep`: the kernel computes ``zh = read(carry) @ W`` and keeps it; the
  local backward is ``jax.vjp`` of ``update`` and returns ``dzh`` per row;
  ``dW = read(C_prev)ᵀ dZh`` over all rows."""
  read = hint.read if hint.read is not None else output

  def weight(params: Params) -> Array:
    return field(params, hint.weight, what, f"RecurrentMatmul(weight={hint.weight!r})")

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    zh = read(carry) @ weight(params)
    new, y = update(params, carry, zx, zh)
    return new, (kept(new, y), zx, zh)

  def backward_step(params: Params, prev: Carry, carry: Carry, res: Any, d: Any) -> Any:
    _, zx, zh = res
    dleaves, dprev, dzx, dzh = _per_step_vjp(update, params, (prev, zx, zh), d)
    _, read_vjp = jax.vjp(read, prev)
    (dread,) = read_vjp(dzh @ weight(params).T.astype(dzh.dtype))  # through zh = read(c) W
    return jax.tree.map(jnp.add, dprev, dread), dzx, dzh, dleaves

  def recurrent_grads(params: Params, prev: Carry, res: Any, dzh: Array) -> dict[str, Array]:
    return {hint.weight: read(prev).T @ dzh}  # dW = read(C_prev)ᵀ dZh

  return fast_step, backward_step, recurrent_grads


def _hand_written(what: str, forward: Any, hint: BackwardStep, kept: Any) -> tuple[Any, Any]:
  """`BackwardStep`: the kernel runs ``forward`` and keeps its residuals; the BPTT's
  body is the user's ``backward``, whose params gradient the reverse scan sums."""

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    new, y, res = forward(params, carry, zx)
    return new, (kept(new, y), res)

  def backward_step(params: Params, prev: Carry, carry: Carry, res: Any, d: Any) -> Any:
    dcarry, dy = d
    dprev, dzx, grads = hint.backward(params, prev, carry, res[1], dcarry, dy)
    want: Any = jax.tree.structure(params)
    got: Any = jax.tree.structure(grads)
    if got != want:
      raise ValueError(
        f"{what}: a hand-written backward (rnnjax.BackwardStep, or a LocalBackward without "
        f"recurrent_grads) must return this step's params gradient in the params' own "
        f"structure {want}, got {got}; return jax.tree.map(jnp.zeros_like, params) with "
        f"your gradients in place"
      )
    return dprev, dzx, None, jax.tree.leaves(grads)  # this step's params gradient

  return fast_step, backward_step


def _hand_written_rows(
  what: str, forward: Any, hint: BackwardRows, kept: Any
) -> tuple[Any, Any, Any]:
  """`BackwardRows`: as `_hand_written`, with per-row arrays for ``recurrent_grads``."""
  rule = hint.recurrent_grads

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    new, y, res = forward(params, carry, zx)
    return new, (kept(new, y), res)

  def backward_step(params: Params, prev: Carry, carry: Carry, res: Any, d: Any) -> Any:
    dcarry, dy = d
    dprev, dzx, rows = hint.backward(params, prev, carry, res[1], dcarry, dy)
    if not jax.tree.leaves(rows):
      raise ValueError(
        f"{what}: with recurrent_grads (rnnjax.BackwardRows), the backward must return per-row "
        f"arrays [B, ...] (the recurrent pre-activation's gradient dzh) as its third value, "
        f"got {describe(rows)}"
      )
    return dprev, dzx, rows, None  # per-row arrays for the rule

  def recurrent_grads(params: Params, prev: Carry, res: Any, rows: Any) -> dict[str, Array]:
    return rule(params, prev, res[1], rows)

  return fast_step, backward_step, recurrent_grads

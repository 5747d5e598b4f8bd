"""Bring your own cell: `custom_cell` turns a plain step function into a `Cell`.

A user writes three functions and nothing else::

    init(key, input_size) -> params              any pytree of floating arrays
    step(params, carry, x) -> (carry, y)         x: [B, I]; carry: a pytree of [B, ...]; y: [B, O]
    initial_carry(batch_shape, dtype) -> carry

and gets every capability of the built-in cells, through generic rules that are
correct by construction:

* `rnnjax.scan` with ``lengths``, ``reverse``, ``time_major``, ``unroll`` and all
  three backward modes. The hand-written BPTT's local backward is ``jax.vjp`` of
  ``step`` at each step, with each step's params gradient summed in the reverse
  scan (the "hint-free" path); it equals autodiff to rounding.
* the layers (`rnnjax.stacked`, `rnnjax.bidirectional`, `rnnjax.init_stacked`,
  `rnnjax.stacked_step`) and `rnnjax.tbptt`;
* every function of `rnnjax.jacobian`, with the state Jacobian from
  ``jax.jacfwd`` over the flattened carry.

The built-in cells fill the same `Cell` record with hand-derived rules (an
input projection hoisted out of the loop, recurrent weight gradients as one
matmul, a hand-written local backward, a closed-form Jacobian).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import checks
from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import (
  Array,
  Carry,
  DType,
  InitFn,
  InitialCarryFn,
  Params,
  ProjectFn,
  Shape,
  StateJacobianFn,
  StepFn,
)

UpdateFn = StepFn
"""``update(params, carry, zx) -> (carry, y)``: a step after its input projection."""

_DEFAULT: Any = object()
"""``initial_carry``'s dtype when the caller gives none: the user's own default."""


def custom_cell(
  init: InitFn,
  step: StepFn,
  initial_carry: InitialCarryFn,
  *,
  name: str = "custom_cell",
  output_size: int | None = None,
  project: ProjectFn | None = None,
  update: UpdateFn | None = None,
  state_jacobian: StateJacobianFn | None = None,
) -> Cell:
  """A `Cell` from a step function, with generic rules and optional hints.

  The three functions are checked where they first run, before any compute
  that uses their results, by shapes alone (see "Shapes are checked" below).

  Args:
    init: ``init(key, input_size) -> params``, any pytree of floating arrays.
    step: ``step(params, carry, x) -> (carry, y)`` for ``x: [B, I]``; the carry
      is any pytree of ``[B, ...]`` arrays, ``y: [B, O]``.
    initial_carry: ``initial_carry(batch_shape, dtype) -> carry`` (zeros).
    name: shown in the cell's repr and in error messages.
    output_size: O, the size of ``y`` (what the next stacked layer sees);
      default the last axis of the carry's first leaf (``h``).
    project: hint, with ``update``: the part of the step that does not read the
      carry, ``zx = project(params, x)`` (e.g. ``x @ w_x + b``). `rnnjax.scan`
      then computes it for all ``T·B`` rows in one matmul, and its gradient
      (``dw_x``, ``db``, ``dX``) is one VJP over all rows instead of one per step.
    update: hint, with ``project``: ``update(params, carry, zx) -> (carry, y)``,
      the rest of the step, so that ``step(p, c, x) = update(p, c, project(p, x))``
      (`rnnjax.check_cell` checks it).
    state_jacobian: hint: the closed-form ``∂s_t/∂s_{t-1}`` for one example
      (``carry`` unbatched, ``x: [I]``), over the flattened carry; the Jacobian
      tools use it instead of ``jax.jacfwd``.

  Returns:
    A `Cell`. Its ``output(carry)`` (used by heads that read the final carry)
    is the carry's first leaf.

  Raises:
    TypeError: a function is not callable, or ``initial_carry`` builds
      non-floating leaves.
    ValueError: ``initial_carry`` builds no arrays, or leaves without the
      ``batch_shape`` in front; ``output_size`` is not a positive int.

  Shapes are checked:
    The cell's ``init``, ``step`` and ``initial_carry`` are the given functions
    wrapped in checks that read only shapes and dtypes (static while tracing,
    so they cost nothing in a compiled scan). They run wherever the cell is
    used (`rnnjax.scan`, the layers, the Jacobian tools), and each error
    names the cell and the shapes:

    * at construction, ``initial_carry`` is evaluated abstractly
      (``jax.eval_shape``) for ``()`` and ``(2,)``: it must build floating
      leaves with ``batch_shape`` in front;
    * ``init`` must return floating leaves only (TypeError naming each
      other leaf); `rnnjax.scan` finds this while it checks the params by
      ``jax.eval_shape(cell.init, key, I)``, before any compute;
    * ``step`` must return a pair ``(carry, y)``: the carry in the structure
      and shapes it was given, which are those ``initial_carry`` builds
      (ValueError naming the leaf, both shapes and ``initial_carry``),
      with floating leaves; ``y`` floating (TypeError), of shape
      ``[*batch_shape, O]`` with the carry's batch shape and
      ``O = output_size`` (ValueError). An exception raised inside ``step``
      gets a note naming the cell and the shapes it was called with.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> def init(key, I):
    ...   return {"w": 0.5 * jax.random.normal(key, (I + 3, 3))}
    >>> def step(p, h, x):                          # h' = tanh([x, h] W)
    ...   h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
    ...   return h, h
    >>> cell = rj.custom_cell(init, step, lambda shape=(), dtype=jnp.float32:
    ...                       jnp.zeros((*shape, 3), dtype), name="tiny")
    >>> params = cell.init(jax.random.key(0), 2)
    >>> carry, ys = rj.scan(cell, params, jnp.ones((5, 4, 2)))
    >>> ys.shape, cell
    ((5, 4, 3), rnnjax.tiny(3))

    A step that changes the carry's shape fails while it is traced:

    >>> bad = rj.custom_cell(init, lambda p, h, x: (h[:, :2], h), cell.initial_carry, name="bad")
    >>> try:  # doctest: +ELLIPSIS
    ...   rj.scan(bad, params, jnp.ones((5, 4, 2)))
    ... except ValueError as e:
    ...   print(e)
    rnnjax.custom_cell('bad'): step(params, carry, x) with x (4, 2) ... returned the carry
    leaf <root> with shape (4, 2), but it was given (4, 3), the shape initial_carry((4,), ...)
    builds: a step must return the carry in the structure and shapes it is given, and
    initial_carry must build that carry: fix whichever of the two is wrong
  """
  for what, fn in (("init", init), ("step", step), ("initial_carry", initial_carry)):
    if not callable(fn):
      raise TypeError(f"rnnjax.custom_cell: {what} must be callable, got {type(fn).__name__}")
  if (project is None) != (update is None):
    raise ValueError(
      "rnnjax.custom_cell: the projection hint needs both project(params, x) -> zx and "
      "update(params, carry, zx) -> (carry, y); pass both or neither"
    )
  what = f"rnnjax.custom_cell({name!r})"
  if output_size is not None:
    checks.positive_int("output_size", output_size, what)
  unbatched = _check_initial_carry(what, initial_carry)  # shapes of initial_carry(())
  leaves = jax.tree.leaves(unbatched)
  state_size = sum(int(leaf.shape[-1]) if leaf.ndim else 1 for leaf in leaves)
  first = leaves[0]
  hidden = output_size if output_size is not None else (int(first.shape[-1]) if first.ndim else 1)

  def checked_init(key: Array, input_size: int) -> Params:
    checks.prng_key(key, what + ".init")
    checks.positive_int("input_size", input_size, what + ".init")
    try:
      params = init(key, input_size)
    except Exception as e:
      e.add_note(f"(raised inside the init of {what}, called with input_size {input_size})")
      raise
    _check_params(what, params, input_size)
    return params

  def checked_initial_carry(batch_shape: Shape = (), dtype: DType = _DEFAULT) -> Carry:
    batch_shape = checks.batch_shape(batch_shape, what + ".initial_carry")
    if dtype is _DEFAULT:
      return initial_carry(batch_shape)
    return initial_carry(batch_shape, dtype)

  def checked(fn: Any, label: str) -> Any:
    def run(params: Params, carry: Carry, x: Array) -> tuple[Carry, Array]:
      try:
        out = fn(params, carry, x)
      except Exception as e:
        e.add_note(
          f"(raised inside the {label} of {what}, called with the carry {_describe(carry)} "
          f"and x {_describe(x)}; initial_carry(batch_shape, dtype) builds the carry "
          f"{_describe(unbatched, '*batch_shape')})"
        )
        raise
      if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(
          f"{what}: {label}(params, carry, x) must return a pair (carry, y), got "
          f"{type(out).__name__} {_describe(out)}"
        )
      new, y = out
      _check_step(what, unbatched, hidden, carry, x, new, y)
      return new, y

    return run

  checked_step = checked(step, "step")
  # The recurrence the kernel runs: the step itself, or the update after a hoisted projection.
  recurrence = checked_step if update is None else checked(update, "update")

  def identity(params: Params, x: Array) -> Array:
    return x  # no projection hint: the step sees x itself

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    new, y = recurrence(params, carry, zx)
    return new, (y, zx)  # the backward re-runs the recurrence from (carry_prev, zx)

  def step_output(carry: Carry, res: Any) -> Array:
    return res[0]

  def output(carry: Carry) -> Array:
    return jax.tree.leaves(carry)[0]

  def add_output_grad(dcarry: Carry, dy: Array) -> Any:
    return dcarry, dy  # both cotangents go to the step's VJP

  def backward_step(
    params: Params, carry_prev: Carry, carry: Carry, res: Any, cotangents: Any
  ) -> tuple[Carry, Array, Params]:
    _, zx = res
    _, vjp = jax.vjp(recurrence, params, carry_prev, zx)
    dparams, dcarry_prev, dzx = vjp(cotangents)
    return dcarry_prev, dzx, dparams  # the params gradient of this step, summed by the BPTT

  return Cell(
    name=name,
    hidden_size=hidden,
    gates=1,
    state_size=state_size,
    init=checked_init,
    initial_carry=checked_initial_carry,
    step=checked_step,
    project=identity if project is None else project,
    fast_step=fast_step,
    backward_step=backward_step,
    recurrent_grads=None,  # None: per-step params gradients
    state_jacobian=state_jacobian,  # None: jax.jacfwd of step
    output=output,
    add_output_grad=add_output_grad,
    step_output=step_output,
  )


# ---------------------------------------------------------------- checks


def _path(path: Any) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def _dtype(leaf: Any) -> Any:
  """A leaf's dtype (Python scalars included), or None for a non-numeric leaf."""
  dtype = getattr(leaf, "dtype", None)
  if dtype is not None:
    return dtype
  try:
    return jnp.result_type(leaf)
  except TypeError:
    return None


def _is_floating(leaf: Any) -> bool:
  dtype = _dtype(leaf)
  return dtype is not None and jnp.issubdtype(dtype, jnp.floating)


def _shape(leaf: Any) -> tuple[int, ...]:
  return tuple(jnp.shape(leaf))


def _leaf(leaf: Any, batch: str = "") -> str:
  """``(4, 3) float32`` (``(*batch_shape, 3) float32`` with ``batch``)."""
  dtype = _dtype(leaf)
  if dtype is None:
    return f"{type(leaf).__name__} {leaf!r:.40}"
  dims = ", ".join([batch, *map(str, _shape(leaf))] if batch else map(str, _shape(leaf)))
  dims = f"({dims},)" if len(_shape(leaf)) + bool(batch) == 1 else f"({dims})"
  return f"{dims} {dtype}"


def _describe(tree: Any, batch: str = "") -> str:
  """Each leaf's path, shape and dtype: ``(4, 3) float32`` for a bare array,
  ``{[0]: (4, 3) float32, [1]: (4, 3) float32}`` for a pytree."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if len(flat) == 1 and not flat[0][0]:
    return _leaf(flat[0][1], batch)
  return "{" + ", ".join(f"{_path(p)}: {_leaf(leaf, batch)}" for p, leaf in flat) + "}"


def _check_initial_carry(what: str, initial_carry: InitialCarryFn) -> Any:
  """The shapes of ``initial_carry((), float32)``, checked against ``(2,)`` by
  ``jax.eval_shape`` (no compute)."""
  try:
    one = jax.eval_shape(lambda: initial_carry((), jnp.float32))
    two = jax.eval_shape(lambda: initial_carry((2,), jnp.float32))
  except Exception as e:
    e.add_note(f"(raised by the initial_carry of {what}, evaluated for batch shapes () and (2,))")
    raise
  flat = jax.tree_util.tree_flatten_with_path(one)[0]
  if not flat:
    raise ValueError(f"{what}: initial_carry returned no arrays")
  bad = [f"{_path(p)}: {_leaf(leaf)}" for p, leaf in flat if not _is_floating(leaf)]
  if bad:
    raise TypeError(
      f"{what}: initial_carry((), float32) built non-floating carry leaves {', '.join(bad)}; "
      f"a carry is differentiated, so every leaf must be a floating array in the given dtype"
    )
  one_struct: Any = jax.tree.structure(one)
  two_struct: Any = jax.tree.structure(two)
  if one_struct != two_struct:
    raise ValueError(
      f"{what}: initial_carry builds the carry {one_struct} for batch shape () but "
      f"{two_struct} for (2,); the structure must not depend on the batch shape"
    )
  for (p, a), b in zip(flat, jax.tree.leaves(two), strict=True):
    if _shape(b) != (2, *_shape(a)):
      raise ValueError(
        f"{what}: initial_carry((2,), float32) built the carry leaf {_path(p)} with shape "
        f"{_shape(b)}, but initial_carry((), float32) builds {_shape(a)}; every leaf must be "
        f"[*batch_shape, ...], here {(2, *_shape(a))}"
      )
  return one


def _check_params(what: str, params: Params, input_size: int) -> None:
  """Every leaf ``init`` returned is a floating array (or a Python float)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [f"{_path(p)}: {_leaf(leaf)}" for p, leaf in flat if not _is_floating(leaf)]
  if bad:
    raise TypeError(
      f"{what}: init(key, {input_size}) returned non-floating params leaves "
      f"{', '.join(bad)} (params {_describe(params)}); every params leaf must be a floating "
      f"array, which gradients and dtype casts apply to: cast it (jnp.asarray(v, "
      f"jnp.float32)), or keep integer settings out of params, in the step's closure"
    )


def _batch_shape(carry: Carry, unbatched: Any) -> tuple[int, ...] | None:
  """The batch shape of ``carry`` if it has the shapes ``initial_carry(batch_shape)``
  builds (``unbatched`` are those of ``initial_carry(())``), else None."""
  got, want = jax.tree.leaves(carry), jax.tree.leaves(unbatched)
  got_struct: Any = jax.tree.structure(carry)
  if got_struct != jax.tree.structure(unbatched) or not got:
    return None
  n = len(_shape(got[0])) - len(want[0].shape)
  if n < 0:
    return None
  batch = _shape(got[0])[:n]
  if all(_shape(g) == (*batch, *w.shape) for g, w in zip(got, want, strict=True)):
    return batch
  return None


def _check_step(
  what: str, unbatched: Any, hidden: int, carry: Carry, x: Any, new: Carry, y: Any
) -> None:
  """``step(params, carry, x) -> (new, y)`` kept the carry and returned a floating
  ``y: [*batch_shape, O]``; shapes only, so at trace time this costs nothing."""
  call = f"{what}: step(params, carry, x) with x {_describe(x)}"
  batch = _batch_shape(carry, unbatched)
  built = (
    f"initial_carry({batch}, {_dtype(jax.tree.leaves(carry)[0])}) builds"
    if batch is not None
    else f"the carry does not have the shapes initial_carry(batch_shape, dtype) builds, "
    f"{_describe(unbatched, '*batch_shape')}"
  )
  fix = (
    "a step must return the carry in the structure and shapes it is given, and "
    "initial_carry must build that carry: fix whichever of the two is wrong"
  )
  new_struct: Any = jax.tree.structure(new)
  old_struct: Any = jax.tree.structure(carry)
  if new_struct != old_struct:
    given = f"the carry {_describe(carry)}" + (f", which {built}" if batch is not None else "")
    raise ValueError(
      f"{call} returned a carry of structure {new_struct}, {_describe(new)}, but it was given "
      f"{given} (structure {old_struct}); {fix}"
    )
  flat = jax.tree_util.tree_flatten_with_path(carry)[0]
  for (p, old), leaf in zip(flat, jax.tree.leaves(new), strict=True):
    if not _is_floating(leaf):
      raise TypeError(
        f"{call} returned the carry leaf {_path(p)} as {_leaf(leaf)}, given {_leaf(old)}; "
        f"every carry leaf must stay a floating array (cast it to the given carry's dtype)"
      )
    if _shape(leaf) != _shape(old):
      shape = _shape(leaf)
      given = (
        f"{_shape(old)}, the shape {built}" if batch is not None else f"{_shape(old)} ({built})"
      )
      raise ValueError(
        f"{call} returned the carry leaf {_path(p)} with shape {shape}, but it was given "
        f"{given}: {fix}"
      )
  if not hasattr(y, "shape") or _dtype(y) is None:
    raise TypeError(
      f"{call} returned y as {type(y).__name__} {_describe(y)}; y must be one array [B, O]"
    )
  if not _is_floating(y):
    raise TypeError(
      f"{call} returned y of dtype {_dtype(y)} and shape {_shape(y)}; y must be a floating "
      f"array (y.astype(carry dtype))"
    )
  if batch is None:
    return
  n = len(batch)
  if _shape(y)[:n] != batch or len(_shape(y)) < n + 1:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)} for the carry {_describe(carry)}, of batch "
      f"shape {batch}; y must have the carry's batch shape in front: {(*batch, hidden)}"
    )
  if len(_shape(y)) == n + 1 and _shape(y)[-1] != hidden:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)}, of size {_shape(y)[-1]}, but the cell's "
      f"output size (what a stacked layer above it sees) is {hidden}; pass "
      f"output_size={_shape(y)[-1]} to rnnjax.custom_cell"
    )

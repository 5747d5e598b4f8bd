"""Shape checks and printers of `rnnjax.custom_cell`: each reads only shapes and
dtypes (static while tracing, so it costs nothing in a compiled scan), and each
error names the cell, the leaf, the shapes and the fix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src.typing import Carry, InitFn, InitialCarryFn, Params, StepFn


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


def _promoted(leaf: Any, x: Any, params: Params) -> Any:
  """The dtype NumPy's promotion gives a step's operands: the carry leaf, ``x`` and
  the params' floating leaves (None where it cannot be formed)."""
  dtypes = [_dtype(leaf), _dtype(x), *(_dtype(p) for p in jax.tree.leaves(params))]
  try:
    return jnp.result_type(*[d for d in dtypes if d is not None])
  except TypeError:
    return None


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


def describe(tree: Any, batch: str = "") -> str:
  """Each leaf's path, shape and dtype: ``(4, 3) float32`` for a bare array,
  ``{[0]: (4, 3) float32, [1]: (4, 3) float32}`` for a pytree."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  if len(flat) == 1 and not flat[0][0]:
    return _leaf(flat[0][1], batch)
  return "{" + ", ".join(f"{_path(p)}: {_leaf(leaf, batch)}" for p, leaf in flat) + "}"


def check_initial_carry(what: str, initial_carry: InitialCarryFn) -> Any:
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


def check_params(what: str, params: Params, input_size: int) -> None:
  """Every leaf ``init`` returned is a floating array (or a Python float)."""
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  bad = [f"{_path(p)}: {_leaf(leaf)}" for p, leaf in flat if not _is_floating(leaf)]
  if bad:
    raise TypeError(
      f"{what}: init(key, {input_size}) returned non-floating params leaves "
      f"{', '.join(bad)} (params {describe(params)}); every params leaf must be a floating "
      f"array, which gradients and dtype casts apply to: cast it (jnp.asarray(v, "
      f"jnp.float32)), or keep integer settings out of params, in the step's closure"
    )


def output_size(init: InitFn, step: StepFn, initial_carry: InitialCarryFn) -> int | None:
  """O, the size of ``y``, by ``jax.eval_shape`` of the three functions (no compute):
  ``step(init(key, 1), initial_carry((1,)), x: [1, 1])``. None when that does not
  trace or ``y`` is not ``[1, O]`` (the step's own checks then report it where it runs)."""

  def one_step() -> Any:
    params = init(jax.random.key(0), 1)
    return step(params, initial_carry((1,), jnp.float32), jnp.zeros((1, 1), jnp.float32))

  try:
    out = jax.eval_shape(one_step)
  except Exception:  # e.g. a cell needing another input size: the carry's first leaf
    return None
  if not isinstance(out, (tuple, list)) or len(out) != 2:
    return None
  y = out[1]
  shape = getattr(y, "shape", None)
  if shape is None or len(shape) != 2 or shape[0] != 1:
    return None
  return int(shape[1])


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


def check_step(
  what: str,
  unbatched: Any,
  hidden: int,
  carry: Carry,
  x: Any,
  new: Carry,
  y: Any,
  params: Params = None,
) -> None:
  """``step(params, carry, x) -> (new, y)`` kept the carry and returned a floating
  ``y: [*batch_shape, O]``; shapes only, so at trace time this costs nothing.

  A carry leaf keeps its dtype, or takes the one NumPy's promotion of the step's
  operands gives (``jnp.result_type`` of the leaf, ``x`` and the params: a float32
  carry with float64 params, as the Jacobian and parallel tools call a step); inside
  `rnnjax.scan` the carry already has that dtype, so any change is refused there."""
  call = f"{what}: step(params, carry, x) with x {describe(x)}"
  batch = _batch_shape(carry, unbatched)
  built = (
    f"initial_carry({batch}, {_dtype(jax.tree.leaves(carry)[0])}) builds"
    if batch is not None
    else f"the carry does not have the shapes initial_carry(batch_shape, dtype) builds, "
    f"{describe(unbatched, '*batch_shape')}"
  )
  fix = (
    "a step must return the carry in the structure and shapes it is given, and "
    "initial_carry must build that carry: fix whichever of the two is wrong"
  )
  new_struct: Any = jax.tree.structure(new)
  old_struct: Any = jax.tree.structure(carry)
  if new_struct != old_struct:
    given = f"the carry {describe(carry)}" + (f", which {built}" if batch is not None else "")
    raise ValueError(
      f"{call} returned a carry of structure {new_struct}, {describe(new)}, but it was given "
      f"{given} (structure {old_struct}); {fix}"
    )
  flat = jax.tree_util.tree_flatten_with_path(carry)[0]
  for (p, old), leaf in zip(flat, jax.tree.leaves(new), strict=True):
    if not _is_floating(leaf):
      raise TypeError(
        f"{call} returned the carry leaf {_path(p)} as {_leaf(leaf)}, given {_leaf(old)}; "
        f"every carry leaf must stay a floating array (cast it to the given carry's dtype)"
      )
    if (
      _dtype(old) is not None
      and _dtype(leaf) != _dtype(old)
      and _dtype(leaf) != _promoted(old, x, params)
    ):
      raise TypeError(
        f"{call} returned the carry leaf {_path(p)} as {_leaf(leaf)}, but it was given "
        f"{_leaf(old)}: a step must keep each carry leaf's dtype ({_dtype(old)} here, not "
        f"{_dtype(leaf)}), which lax.scan needs; cast it back (new.astype(old.dtype)) or "
        f"compute in the carry's dtype"
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
      f"{call} returned y as {type(y).__name__} {describe(y)}; y must be one array [B, O]"
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
      f"{call} returned y of shape {_shape(y)} for the carry {describe(carry)}, of batch "
      f"shape {batch}; y must have the carry's batch shape in front: {(*batch, hidden)}"
    )
  if len(_shape(y)) != n + 1:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)} (rank {len(_shape(y))}) for the carry "
      f"{describe(carry)}, of batch shape {batch}; y must be one vector per example, "
      f"[*batch_shape, O] = {(*batch, hidden)}: flatten the extra axes "
      f"(y.reshape(*batch_shape, -1))"
    )
  if _shape(y)[-1] != hidden:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)}, of size {_shape(y)[-1]}, but the cell's "
      f"output size (what a stacked layer above it sees) is {hidden}; pass "
      f"output_size={_shape(y)[-1]} to rnnjax.custom_cell"
    )

"""Bring your own cell: `custom_cell` turns a plain step function into a `Cell`.

A user writes three functions and nothing else::

    init(key, input_size) -> params              any pytree of floating arrays
    step(params, carry, x) -> (carry, y)         x: [B, I]; carry: a pytree of [B, ...]; y: [B, O]
    initial_carry(batch_shape, dtype) -> carry

and gets every capability of the built-in cells, through generic rules that are
correct by construction:

* `rnnjax.scan` with ``lengths``, ``resets``, ``reverse``, ``time_major``,
  ``unroll`` and all three backward modes. The hand-written BPTT's local
  backward is ``jax.vjp`` of ``step`` at each step, over the params leaves the
  step reads, with each step's params gradient summed in the reverse scan (the
  "hint-free" path); it equals autodiff to rounding.
* the layers (`rnnjax.stacked`, `rnnjax.bidirectional`, `rnnjax.init_stacked`,
  `rnnjax.stacked_step`) and `rnnjax.tbptt`;
* every function of `rnnjax.jacobian`, with the state Jacobian from
  ``jax.jacfwd`` over the flattened carry.

Four optional hints make it as fast as the built-ins, which are made here too
(`rnnjax.elman`, `rnnjax.gru` and `rnnjax.lstm` pass all four): an input
projection hoisted out of the loop (``project``), a recurrent matmul whose
weight gradient is one matmul over all rows (`RecurrentMatmul`), a hand-written
local backward (`LocalBackward`, whose ``recurrent_grads`` is the general form
of the recurrent-matmul hint), and a closed-form Jacobian (``state_jacobian``).
`custom_cell` compiles the hints into the `Cell` record's slots, which the
kernel (`rnnjax._src.kernel`) and the BPTT (`rnnjax._src.bptt`) run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import checks, dataflow
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

UpdateFn = Callable[..., tuple[Carry, Array]]
"""``update(params, carry, zx) -> (carry, y)``: a step after its input projection
(``update(params, carry, zx, zh)`` with the `RecurrentMatmul` hint)."""

_DEFAULT: Any = object()
"""``initial_carry``'s dtype when the caller gives none: the user's own default."""


class RecurrentMatmul(NamedTuple):
  """Hint: the step reads one recurrent weight only through ``zh = read(carry) @ W``.

  With it `rnnjax.custom_cell` computes ``zh`` itself and hands it to
  ``update(params, carry, zx, zh)``. The hand-written BPTT then keeps each step's
  ``∂L/∂zh: [B, kH]`` instead of a per-step ``∂L/∂W`` (an outer product per step),
  and forms the weight's gradient as one matmul over all ``N = T·B`` rows,
  ``dW = read(carry_prev)ᵀ dZh``; the rest of each step's backward is ``jax.vjp``
  of ``update``, over the params leaves ``update`` reads. (An ``update`` that also
  reads ``W`` itself gets that part of the gradient per step, as without the hint:
  exact, only slower.)

  Attributes:
    weight: the params field holding ``W: [R, kH]`` (a NamedTuple attribute or a
      dict key at the top level of the params).
    read: ``read(carry) -> a: [B, R]``, the carry's part that multiplies ``W``;
      default the carry's first leaf (``h``).
  """

  weight: str
  read: Callable[[Carry], Array] | None = None


class LocalBackward(NamedTuple):
  """Hint: a hand-written local backward, the body of the hand-written BPTT.

  Attributes:
    forward: ``forward(params, carry, zx) -> (carry, y, residuals)``, the step after
      its input projection (``zx = project(params, x)``, or ``x`` without the
      projection hint), also returning what ``backward`` needs (gate values, or
      None). The forward scan runs it.
    backward: ``backward(params, carry_prev, carry, residuals, dcarry, dy) ->
      (dcarry_prev, dzx, grads)``: from ``∂L/∂carry_t`` (the later steps') and
      ``∂L_t/∂y_t``, the gradients of the previous carry, of ``zx`` (it feeds the
      projection's params and the inputs through one VJP over all rows) and
      ``grads``: without ``recurrent_grads``, this step's gradient of the params
      (a pytree like the params; the reverse scan sums it); with it, any per-row
      arrays ``[B, ...]`` (typically ``dzh``, the recurrent pre-activation's).
    recurrent_grads: ``recurrent_grads(params, carry_prev, residuals, grads) ->
      {field: gradient}`` over all ``N = T·B`` rows at once (leaves ``[N, ...]``),
      e.g. ``{"w_h": H_prevᵀ dZh}``: the recurrent weights' gradients as single
      matmuls. Every params field the recurrence reads must be named, or the
      BPTT fails at trace time naming the leaf.
  """

  forward: Callable[..., tuple[Carry, Array, Any]]
  backward: Callable[..., tuple[Carry, Array, Any]]
  recurrent_grads: Callable[..., dict[str, Array]] | None = None


def custom_cell(
  init: InitFn,
  step: StepFn,
  initial_carry: InitialCarryFn,
  *,
  name: str = "custom_cell",
  output_size: int | None = None,
  project: ProjectFn | None = None,
  update: UpdateFn | None = None,
  recurrent: RecurrentMatmul | None = None,
  backward: LocalBackward | None = None,
  state_jacobian: StateJacobianFn | None = None,
) -> Cell:
  """A `Cell` from a step function, with generic rules and optional hints.

  The three functions are checked where they first run, before any compute
  that uses their results, by shapes alone (see "Shapes are checked" below).
  `rnnjax.elman`, `rnnjax.gru` and `rnnjax.lstm` are made by this function too,
  with every hint.

  Args:
    init: ``init(key, input_size) -> params``, any pytree of floating arrays.
    step: ``step(params, carry, x) -> (carry, y)`` for ``x: [B, I]``; the carry
      is any pytree of ``[B, ...]`` arrays, ``y: [B, O]``.
    initial_carry: ``initial_carry(batch_shape, dtype) -> carry`` (zeros).
    name: shown in the cell's repr and in error messages.
    output_size: O, the size of ``y`` (what the next stacked layer sees);
      default found by ``jax.eval_shape`` of the three functions (``step`` on
      ``init(key, 1)``, ``initial_carry((1,))`` and ``x: [1, 1]``; no compute),
      or, where that does not trace, the last axis of the carry's first leaf.
      Pass it for a cell whose ``y`` has another size at other input sizes.
    project: hint: the part of the step that does not read the carry,
      ``zx = project(params, x)`` (e.g. ``x @ w_x + b``). `rnnjax.scan` then
      computes it for all ``T·B`` rows in one matmul, and its gradient
      (``dw_x``, ``db``, ``dX``) is one VJP over all rows instead of one per step.
      Needs ``update`` or ``backward``.
    update: with ``project`` or ``recurrent``: ``update(params, carry, zx) ->
      (carry, y)``, the rest of the step, so that ``step(p, c, x) = update(p, c,
      project(p, x))``; with ``recurrent`` it takes ``zh`` too,
      ``step(p, c, x) = update(p, c, project(p, x), read(c) @ p[weight])``
      (`rnnjax.check_cell` checks either).
    recurrent: hint, a `RecurrentMatmul`: the recurrent weight's gradient as
      one matmul over all ``T·B`` rows, for a cell whose local backward is
      autodiff's.
    backward: hint, a `LocalBackward`: a hand-written local backward (with, in
      its ``recurrent_grads``, the recurrent weights' gradients as single
      matmuls); its ``forward`` takes ``update``'s place (pass no ``update``).
    state_jacobian: hint: the closed-form ``∂s_t/∂s_{t-1}`` for one example
      (``carry`` unbatched, ``x: [I]``), over the flattened carry; the Jacobian
      tools use it instead of ``jax.jacfwd``.

  Returns:
    A `Cell`. Its ``output(carry)`` (used by heads that read the final carry)
    is the carry's first leaf.

  Raises:
    TypeError: a function is not callable, a hint has the wrong type, or
      ``initial_carry`` builds non-floating leaves.
    ValueError: the hints do not combine (``project`` without ``update`` or
      ``backward``; ``update`` without ``project`` or ``recurrent``, or with
      ``backward``; ``recurrent`` without ``update``, or with ``backward``);
      ``initial_carry`` builds no arrays, or leaves without the
      ``batch_shape`` in front; ``output_size`` is not a positive int.

  Without hints the hand-written BPTT's local backward is ``jax.vjp`` of
  ``step`` at each step (over the params leaves the step reads), and each step's
  params gradient is summed in the reverse scan. The hints each remove a cost of
  that path, and each is held to it by `rnnjax.check_cell` and the tests:

  * ``project``: ``zx`` for all T·B rows in one matmul, and one VJP for
    ``dw_x``, ``db`` and ``dX``, instead of a matmul and its VJP per step;
  * ``recurrent``: ``dW = read(C_prev)ᵀ dZh`` once, instead of an outer product
    per step;
  * ``backward``: the user's local backward on saved residuals, instead of
    ``jax.vjp``'s recompute of the step;
  * ``state_jacobian``: the Jacobian tools call it instead of ``jax.jacfwd``.

  Shapes are checked:
    The cell's ``init``, ``step`` and ``initial_carry`` (and ``update`` and
    ``backward.forward``) are the given functions wrapped in checks that read
    only shapes and dtypes (static while tracing, so they cost nothing in a
    compiled scan). They run wherever the cell is used (`rnnjax.scan`, the
    layers, the Jacobian tools), and each error names the cell and the shapes:

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
  return build(
    init,
    step,
    initial_carry,
    name=name,
    what=f"rnnjax.custom_cell({name!r})",
    output_size=output_size,
    project=project,
    update=update,
    recurrent=recurrent,
    backward=backward,
    state_jacobian=state_jacobian,
  )


def build(
  init: InitFn,
  step: StepFn,
  initial_carry: InitialCarryFn,
  *,
  name: str,
  what: str,
  output_size: int | None = None,
  project: ProjectFn | None = None,
  update: UpdateFn | None = None,
  recurrent: RecurrentMatmul | None = None,
  backward: LocalBackward | None = None,
  state_jacobian: StateJacobianFn | None = None,
) -> Cell:
  """`custom_cell`, with ``what`` naming the cell in error messages (the
  built-ins pass ``"rnnjax.lstm"``, so their users read the name they called)."""
  for label, fn in (("init", init), ("step", step), ("initial_carry", initial_carry)):
    if not callable(fn):
      raise TypeError(f"{what}: {label} must be callable, got {type(fn).__name__}")
  _check_hints(what, project, update, recurrent, backward)
  if output_size is not None:
    checks.positive_int("output_size", output_size, what)
  unbatched = _check_initial_carry(what, initial_carry)  # shapes of initial_carry(())
  leaves = jax.tree.leaves(unbatched)
  state_size = sum(int(leaf.shape[-1]) if leaf.ndim else 1 for leaf in leaves)
  first = leaves[0]
  hidden = output_size if output_size is not None else _output_size(init, step, initial_carry)
  if hidden is None:
    hidden = int(first.shape[-1]) if first.ndim else 1

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

  def checked(fn: Any, label: str, arity: int = 2) -> Any:
    def run(params: Params, carry: Carry, x: Array, *rest: Any) -> Any:
      try:
        out = fn(params, carry, x, *rest)
      except Exception as e:
        e.add_note(
          f"(raised inside the {label} of {what}, called with the carry {_describe(carry)} "
          f"and x {_describe(x)}; initial_carry(batch_shape, dtype) builds the carry "
          f"{_describe(unbatched, '*batch_shape')})"
        )
        raise
      if not isinstance(out, (tuple, list)) or len(out) != arity:
        want = "a pair (carry, y)" if arity == 2 else "a triple (carry, y, residuals)"
        raise TypeError(
          f"{what}: {label}(params, carry, x) must return {want}, got "
          f"{type(out).__name__} {_describe(out)}"
        )
      _check_step(what, unbatched, hidden, carry, x, out[0], out[1])
      return out

    return run

  checked_step = checked(step, "step")

  def output(carry: Carry) -> Array:
    return jax.tree.leaves(carry)[0]

  def step_output(carry: Carry, res: Any) -> Array:
    return output(carry) if res[0] is None else res[0]

  def kept(new: Carry, y: Array) -> Array | None:
    """``y`` for the residuals, or None when it is the carry's first leaf (``h``),
    which the scan keeps already: the output is then not stored twice."""
    return None if y is jax.tree.leaves(new)[0] else y

  def add_output_grad(dcarry: Carry, dy: Array) -> Any:
    return dcarry, dy  # the local backward takes both cotangents

  if backward is not None:
    fast_step, backward_step, rule = _hand_written(
      what, checked(backward.forward, "forward", 3), backward, kept
    )
  elif recurrent is not None:
    assert update is not None
    fast_step, backward_step, rule = _recurrent(
      what, checked(update, "update"), recurrent, output, kept
    )
  else:
    fast_step, backward_step = _hint_free(
      checked(update, "update") if update else checked_step, kept
    )
    rule = None

  def identity(params: Params, x: Array) -> Array:
    return x  # no projection hint: the step sees x itself

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
    recurrent_grads=rule,
    state_jacobian=state_jacobian,  # None: jax.jacfwd of step
    output=output,
    add_output_grad=add_output_grad,
    step_output=step_output,
  )


# ---------------------------------------------------------------- the three local backwards


def _check_hints(
  what: str,
  project: ProjectFn | None,
  update: UpdateFn | None,
  recurrent: RecurrentMatmul | None,
  backward: LocalBackward | None,
) -> None:
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
      f"its recurrent_grads (LocalBackward(forward, backward, recurrent_grads))"
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
  what: str, update: Any, hint: RecurrentMatmul, output: Any, kept: Any
) -> tuple[Any, Any, Any]:
  """With `RecurrentMatmul`: the kernel computes ``zh = read(carry) @ W`` and keeps
  it; the local backward is ``jax.vjp`` of ``update`` and returns ``dzh`` per row;
  ``dW = read(C_prev)ᵀ dZh`` over all rows."""
  read = hint.read if hint.read is not None else output

  def weight(params: Params) -> Array:
    return _field(what, params, hint.weight)

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


def _hand_written(what: str, forward: Any, hint: LocalBackward, kept: Any) -> tuple[Any, Any, Any]:
  """With `LocalBackward`: the kernel runs ``forward`` and keeps its residuals; the
  BPTT's body is the user's ``backward``."""
  rule = hint.recurrent_grads

  def fast_step(params: Params, carry: Carry, zx: Array) -> tuple[Carry, Any]:
    new, y, res = forward(params, carry, zx)
    return new, (kept(new, y), res)

  def backward_step(params: Params, prev: Carry, carry: Carry, res: Any, d: Any) -> Any:
    dcarry, dy = d
    dprev, dzx, grads = hint.backward(params, prev, carry, res[1], dcarry, dy)
    if rule is not None:
      if not jax.tree.leaves(grads):
        raise ValueError(
          f"{what}: with recurrent_grads, LocalBackward.backward must return per-row arrays "
          f"[B, ...] (the recurrent pre-activation's gradient dzh) as its third value, got "
          f"{_describe(grads)}"
        )
      return dprev, dzx, grads, None  # per-row arrays for the rule
    want: Any = jax.tree.structure(params)
    got: Any = jax.tree.structure(grads)
    if got != want:
      raise ValueError(
        f"{what}: without recurrent_grads, LocalBackward.backward must return this step's "
        f"params gradient in the params' own structure {want}, got {got}; return "
        f"jax.tree.map(jnp.zeros_like, params) with your gradients in place"
      )
    return dprev, dzx, None, jax.tree.leaves(grads)  # this step's params gradient

  def recurrent_grads(params: Params, prev: Carry, res: Any, rows: Any) -> dict[str, Array]:
    assert rule is not None
    return rule(params, prev, res[1], rows)

  return fast_step, backward_step, None if rule is None else recurrent_grads


def _field(what: str, params: Params, name: str) -> Array:
  """``params[name]`` or ``params.name``, with an error naming the fields."""
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
      f"{what}: the recurrent-matmul hint reads the weight {name!r} from the params, "
      f"which must then be a dict or a NamedTuple, got {type(params).__name__}"
    )
  raise ValueError(
    f"{what}: RecurrentMatmul(weight={name!r}) names no params field; the params have {fields}"
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


def _output_size(init: InitFn, step: StepFn, initial_carry: InitialCarryFn) -> int | None:
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
    if _dtype(old) is not None and _dtype(leaf) != _dtype(old):
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
  if len(_shape(y)) != n + 1:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)} (rank {len(_shape(y))}) for the carry "
      f"{_describe(carry)}, of batch shape {batch}; y must be one vector per example, "
      f"[*batch_shape, O] = {(*batch, hidden)}: flatten the extra axes "
      f"(y.reshape(*batch_shape, -1))"
    )
  if _shape(y)[-1] != hidden:
    raise ValueError(
      f"{call} returned y of shape {_shape(y)}, of size {_shape(y)[-1]}, but the cell's "
      f"output size (what a stacked layer above it sees) is {hidden}; pass "
      f"output_size={_shape(y)[-1]} to rnnjax.custom_cell"
    )

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

Optional hints (`rnnjax._src.hints`) make it as fast as the built-ins, which
are made here too: one step hint (``fast=``: `ProjectedStep`, `MatmulStep`,
`BackwardStep` or `BackwardRows`) and a Jacobian hint (``jacobian=``:
`ClosedJacobian`). `custom_cell` compiles them into the cell's private
`Compiled` form, which the kernel (`rnnjax._src.kernel`) and the BPTT
(`rnnjax._src.bptt`) run; the shape checks live in `rnnjax._src.shapes`.
"""

from __future__ import annotations

from typing import Any

import jax

from rnnjax._src import arguments, shapes
from rnnjax._src.activations import Activation
from rnnjax._src.cells.base import Cell, Compiled
from rnnjax._src.hints import (
  STEP_HINTS,
  ClosedDiagonal,
  ClosedJacobian,
  LocalBackward,
  RecurrentMatmul,
  StepHint,
  UpdateFn,
  compile_step,
  from_keywords,
)
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

_DEFAULT: Any = object()
"""``initial_carry``'s dtype when the caller gives none: the user's own default."""


def custom_cell(
  init: InitFn,
  step: StepFn,
  initial_carry: InitialCarryFn,
  *,
  name: str = "custom_cell",
  output_size: int | None = None,
  fast: StepHint | None = None,
  jacobian: ClosedJacobian | None = None,
  diagonal: ClosedDiagonal | None = None,
  recurrent_weight: str | None = None,
  input_weight: str | None = None,
  activation: Activation | None = None,
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
    fast: the step hint, one object carrying all it needs:
      `rnnjax.ProjectedStep` (an input projection hoisted out of the loop),
      `rnnjax.MatmulStep` (the recurrent weight's gradient as one matmul over
      all rows), `rnnjax.BackwardStep` or `rnnjax.BackwardRows` (a
      hand-written local backward); each may carry a ``project``.
    jacobian: the Jacobian hint, `rnnjax.ClosedJacobian`: the closed-form
      ``∂s_t/∂s_{t-1}`` the Jacobian tools use instead of ``jax.jacfwd``.
    diagonal: the diagonal hint, `rnnjax.ClosedDiagonal`: the closed-form
      diagonal of ``∂s_t/∂s_{t-1}``, ``[S]`` for one example, which quasi-DEER
      and quasi-ELK (`rnnjax.parallel_scan`) use instead of reading it off
      ``jax.jacfwd`` of the step.
    recurrent_weight: declared: the params field of the recurrent weight ``W``
      (what the Jacobian tools' bounds read), or None.
    input_weight: declared: the params field of the input weight ``[I, ...]``,
      whose first axis `rnnjax.scan` compares with the inputs' feature size.
    activation: declared: the step is ``h_t = f(zx_t + h_{t-1} @ W)`` with this
      `rnnjax.Activation` and ``W`` the ``recurrent_weight`` (which it needs),
      so the Jacobian tools give the lecture's bound from its ``γ``.
    project: (rnnjax 0.1's keywords, mapped onto ``fast``, for one release:
      ``project``, ``update``, ``recurrent``, ``backward``, ``state_jacobian``)
      hint: the part of the step that does not read the carry,
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
  * ``state_jacobian``: the Jacobian tools call it instead of ``jax.jacfwd``;
  * ``diagonal``: quasi-DEER calls it instead of ``jax.jacfwd`` of the step.

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
    fast=fast,
    jacobian=jacobian,
    diagonal=diagonal,
    recurrent_weight=recurrent_weight,
    input_weight=input_weight,
    activation=activation,
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
  fast: StepHint | None = None,
  jacobian: ClosedJacobian | None = None,
  diagonal: ClosedDiagonal | None = None,
  project: ProjectFn | None = None,
  update: UpdateFn | None = None,
  recurrent: RecurrentMatmul | None = None,
  backward: LocalBackward | None = None,
  state_jacobian: StateJacobianFn | None = None,
  options: tuple[tuple[str, Any], ...] = (),
  dtype: DType | None = None,
  activation: Activation | None = None,
  recurrent_weight: str | None = None,
  input_weight: str | None = None,
  pallas: Any = None,
  gates: int = 1,
) -> Cell:
  """`custom_cell`, with ``what`` naming the cell in error messages (the
  built-ins pass ``"rnnjax.lstm"``, so their users read the name they called)
  and the built-ins' declarations: their options, compute dtype, activation,
  weight fields, Pallas rule and gate count."""
  for label, fn in (("init", init), ("step", step), ("initial_carry", initial_carry)):
    if not callable(fn):
      raise TypeError(f"{what}: {label} must be callable, got {type(fn).__name__}")
  legacy = from_keywords(what, project, update, recurrent, backward)
  if legacy is not None and fast is not None:
    raise ValueError(
      f"{what}: fast= replaces rnnjax 0.1's project=/update=/recurrent=/backward=; pass "
      f"one of the two forms"
    )
  fast = legacy if fast is None else fast
  if fast is not None and not isinstance(fast, STEP_HINTS):
    raise TypeError(
      f"{what}: fast must be one of rnnjax.ProjectedStep, MatmulStep, BackwardStep, "
      f"BackwardRows, got {type(fast).__name__}"
    )
  if jacobian is not None and not isinstance(jacobian, ClosedJacobian):
    raise TypeError(f"{what}: jacobian must be rnnjax.ClosedJacobian(fn), got {jacobian!r}")
  closed = jacobian.fn if jacobian is not None else state_jacobian
  if diagonal is not None and not isinstance(diagonal, ClosedDiagonal):
    raise TypeError(f"{what}: diagonal must be rnnjax.ClosedDiagonal(fn), got {diagonal!r}")
  if diagonal is not None and not callable(diagonal.fn):
    raise TypeError(
      f"{what}: ClosedDiagonal(fn) needs a function fn(params, carry, x) -> [S], got "
      f"{type(diagonal.fn).__name__}"
    )
  if activation is not None and recurrent_weight is None:
    raise ValueError(
      f"{what}: activation= declares h_t = f(zx_t + h_(t-1) @ W); name W's params field "
      f"with recurrent_weight= (e.g. recurrent_weight='w_h')"
    )
  if output_size is not None:
    arguments.positive_int("output_size", output_size, what)
  unbatched = shapes.check_initial_carry(what, initial_carry)  # shapes of initial_carry(())
  leaves = jax.tree.leaves(unbatched)
  state_size = sum(int(leaf.shape[-1]) if leaf.ndim else 1 for leaf in leaves)
  first = leaves[0]
  hidden = output_size if output_size is not None else shapes.output_size(init, step, initial_carry)
  if hidden is None:
    hidden = int(first.shape[-1]) if first.ndim else 1

  def checked_init(key: Array, input_size: int) -> Params:
    arguments.prng_key(key, what + ".init")
    arguments.positive_int("input_size", input_size, what + ".init")
    try:
      params = init(key, input_size)
    except Exception as e:
      e.add_note(f"(raised inside the init of {what}, called with input_size {input_size})")
      raise
    shapes.check_params(what, params, input_size)
    return params

  def checked_initial_carry(batch_shape: Shape = (), dtype: DType = _DEFAULT) -> Carry:
    batch_shape = arguments.batch_shape(batch_shape, what + ".initial_carry")
    if dtype is _DEFAULT:
      return initial_carry(batch_shape)
    return initial_carry(batch_shape, dtype)

  def checked(fn: Any, label: str, arity: int = 2) -> Any:
    def run(params: Params, carry: Carry, x: Array, *rest: Any) -> Any:
      try:
        out = fn(params, carry, x, *rest)
      except Exception as e:
        e.add_note(
          f"(raised inside the {label} of {what}, called with the carry "
          f"{shapes.describe(carry)} and x {shapes.describe(x)}; initial_carry(batch_shape, "
          f"dtype) builds the carry {shapes.describe(unbatched, '*batch_shape')})"
        )
        raise
      if not isinstance(out, (tuple, list)) or len(out) != arity:
        want = "a pair (carry, y)" if arity == 2 else "a triple (carry, y, residuals)"
        raise TypeError(
          f"{what}: {label}(params, carry, x) must return {want}, got "
          f"{type(out).__name__} {shapes.describe(out)}"
        )
      shapes.check_step(what, unbatched, hidden, carry, x, out[0], out[1], params)
      return out

    return run

  checked_step = checked(step, "step")

  def output(carry: Carry) -> Array:
    return jax.tree.leaves(carry)[0]

  def step_output(carry: Carry, res: Any) -> Array:
    return output(carry) if res[0] is None else res[0]

  slots = compile_step(what, fast, checked_step, checked, output)
  return Cell(
    name=name,
    hidden_size=hidden,
    state_size=state_size,
    init=checked_init,
    initial_carry=checked_initial_carry,
    step=checked_step,
    output=output,
    compiled=Compiled(
      project=slots.project,
      fast_step=slots.fast_step,
      backward_step=slots.backward_step,
      step_output=step_output,
      recurrent_grads=slots.recurrent_grads,
      rows_are_dzx=slots.rows_are_dzx,
      state_jacobian=closed,  # None: jax.jacfwd of step
      state_diagonal=None if diagonal is None else diagonal.fn,  # None: read off jacfwd
      pallas=pallas,
      gates=gates,
    ),
    options=options,
    dtype=dtype,
    activation=activation,
    recurrent_weight=recurrent_weight,
    input_weight=input_weight,
  )

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

from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import Array, Carry, InitFn, InitialCarryFn, Params, StepFn


def custom_cell(
  init: InitFn,
  step: StepFn,
  initial_carry: InitialCarryFn,
  *,
  name: str = "custom_cell",
  output_size: int | None = None,
) -> Cell:
  """A `Cell` from a step function, with generic (hint-free) rules.

  Args:
    init: ``init(key, input_size) -> params``, any pytree of floating arrays.
    step: ``step(params, carry, x) -> (carry, y)`` for ``x: [B, I]``; the carry
      is any pytree of ``[B, ...]`` arrays, ``y: [B, O]``.
    initial_carry: ``initial_carry(batch_shape, dtype) -> carry`` (zeros).
    name: shown in the cell's repr and in error messages.
    output_size: O, the size of ``y`` (what the next stacked layer sees);
      default the last axis of the carry's first leaf (``h``).

  Returns:
    A `Cell`. Its ``output(carry)`` (used by heads that read the final carry)
    is the carry's first leaf.

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
  """
  for what, fn in (("init", init), ("step", step), ("initial_carry", initial_carry)):
    if not callable(fn):
      raise TypeError(f"rnnjax.custom_cell: {what} must be callable, got {type(fn).__name__}")
  leaves = jax.tree.leaves(initial_carry((), jnp.float32))
  if not leaves:
    raise ValueError(f"rnnjax.custom_cell({name!r}): initial_carry returned no arrays")
  state_size = sum(int(jnp.shape(leaf)[-1]) if jnp.ndim(leaf) else 1 for leaf in leaves)
  first = leaves[0]
  hidden = output_size if output_size is not None else int(jnp.shape(first)[-1])

  def project(params: Params, x: Array) -> Array:
    return x  # no input projection: the step sees x itself

  def fast_step(params: Params, carry: Carry, x: Array) -> tuple[Carry, Any]:
    new, y = step(params, carry, x)
    return new, (y, x)  # the backward re-runs the step from (carry_prev, x)

  def step_output(carry: Carry, res: Any) -> Array:
    return res[0]

  def output(carry: Carry) -> Array:
    return jax.tree.leaves(carry)[0]

  def add_output_grad(dcarry: Carry, dy: Array) -> Any:
    return dcarry, dy  # both cotangents go to the step's VJP

  def backward_step(
    params: Params, carry_prev: Carry, carry: Carry, res: Any, cotangents: Any
  ) -> tuple[Carry, Array, Params]:
    _, x = res
    _, vjp = jax.vjp(step, params, carry_prev, x)
    dparams, dcarry_prev, dx = vjp(cotangents)
    return dcarry_prev, dx, dparams  # the params gradient of this step, summed by the BPTT

  return Cell(
    name=name,
    hidden_size=hidden,
    gates=1,
    state_size=state_size,
    init=init,
    initial_carry=initial_carry,
    step=step,
    project=project,
    fast_step=fast_step,
    backward_step=backward_step,
    recurrent_grads=None,  # None: per-step params gradients
    state_jacobian=None,  # None: jax.jacfwd of step
    output=output,
    add_output_grad=add_output_grad,
    step_output=step_output,
  )

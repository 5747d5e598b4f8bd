"""The one forward scan kernel every cell and every backward mode shares.

Data flow (time-major, valid steps a prefix of each sequence):

    xs [T, B, I] --(one matmul over all T·B rows)--> zx [T, B, kH]
    zx --scan(cell.fast_step, masked hold)--> carries [T, ...], residuals [T, ...]

Past a sequence's length the carry is held (``carry_t = carry_{t-1}``), so the
last carry is the carry at each sequence's last valid step, and the output is
zero.

Episode resets (``resets: [T, B]`` bool, already in processing order and
already masked by the lengths): before step t the carry of every sequence b
with ``resets[t, b]`` is replaced by the reset carry ``carry0[b]``::

    carry_in_t = resets[t] ? carry0 : carry_{t-1}
    carry_t    = mask[t] ? fast_step(carry_in_t, zx_t) : carry_{t-1}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import Array, Carry, Params


def rows(m: Array, a: Array) -> Array:
  """``m: [B]`` (or ``[T, B]``) broadcastable against ``a: [B, ...]`` (``[T, B, ...]``)."""
  return m.reshape(m.shape + (1,) * (a.ndim - m.ndim))


def hold(m: Array | None, new: Any, old: Any) -> Any:
  """``new`` where the step is valid (``m: [B]``), else ``old``; ``m=None``: new."""
  if m is None:
    return new
  return jax.tree.map(lambda a, b: jnp.where(rows(m, a), a, b), new, old)


def reset(r: Array | None, carry: Carry, carry0: Carry) -> Carry:
  """``carry0`` where ``r: [B]`` is set, else ``carry``; ``r=None``: carry.

  Works on a step's carry (leaves ``[B, ...]``) and on stacked carries
  (``r: [T, B]``, leaves ``[T, B, ...]``; ``carry0``'s ``[B, ...]`` leaves then
  broadcast over T)."""
  if r is None:
    return carry

  def pick(c: Array, c0: Array) -> Array:
    c0 = c0.astype(c.dtype).reshape((1,) * (c.ndim - c0.ndim) + c0.shape)
    return jnp.where(rows(r, c), c0, c)

  return jax.tree.map(pick, carry, carry0)


# Below this many elements in a step's input (all leaves of ``xs[t]``) the
# copy's per-step cost outweighs what vector code saves (an Elman step at
# B=1, H=128 ran twice as slow with it), and `scan` is ``lax.scan``.
PREFETCH_MIN_ELEMENTS = 4096


def scan(
  f: Callable[[Any, Any], tuple[Any, Any]],
  init: Any,
  xs: Any,
  *,
  reverse: bool = False,
  unroll: int = 1,
) -> tuple[Any, Any]:
  """``lax.scan`` over the leading axis of ``xs``, each step's slice of ``xs``
  read one step ahead into the loop's carry (on CPU).

  The values are those of ``lax.scan(f, init, xs, reverse=reverse,
  unroll=unroll)``; only where XLA reads a step's input differs. ``lax.scan``
  slices ``xs`` inside the step, and XLA CPU fuses that dynamic slice into the
  step's elementwise kernels, which then run without vector instructions
  (``benchmarks/results/profile_cpu.md`` measures it). Here the slice for step
  t±1 is a copy made during step t, so the step's kernels read a plain
  buffer. With ``unroll > 1`` the copies inside one unrolled body are fused
  back, and the forward measured slower than with ``unroll=1``. It is
  ``lax.scan`` where a step's input has fewer than `PREFETCH_MIN_ELEMENTS`
  elements (the copy costs more than it saves), and on other backends (GPU,
  TPU), whose fusions read a dynamic slice at full speed and where the copy
  would be one more kernel launch a step.

  Args:
    f: ``f(carry, x_t) -> (carry, y_t)``.
    init: the initial carry.
    xs: a pytree of ``[T, ...]`` arrays (None leaves pass as None).
    reverse: run from ``t = T-1`` down to 0; ``ys[t]`` still belongs to ``xs[t]``.
    unroll: the ``lax.scan`` unroll factor.

  Returns:
    ``(carry_T, ys)``, ``ys`` stacked ``[T, ...]``.

  Raises:
    ValueError: the leaves of ``xs`` do not share a leading axis.
  """
  leaves = jax.tree.leaves(xs)
  lengths = {a.shape[0] if a.ndim else None for a in leaves}
  if len(lengths) > 1 or None in lengths:
    raise ValueError(
      "rnnjax's kernel scan: every leaf of xs needs the same leading (time) axis, got shapes "
      f"{[a.shape for a in leaves]}"
    )
  step_elements = sum(math.prod(a.shape[1:]) for a in leaves)
  if (
    not leaves
    or leaves[0].shape[0] == 0
    or step_elements < PREFETCH_MIN_ELEMENTS
    or jax.default_backend() != "cpu"
  ):
    return lax.scan(f, init, xs, reverse=reverse, unroll=unroll)
  T = leaves[0].shape[0]

  def load(t: Array) -> Any:
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, t, keepdims=False), xs)

  def body(state: tuple[Any, Any, Array], _: None) -> tuple[tuple[Any, Any, Array], Any]:
    carry, x, t = state
    nxt = jnp.maximum(t - 1, 0) if reverse else jnp.minimum(t + 1, T - 1)
    carry, y = f(carry, x)
    return (carry, load(nxt), nxt), y

  first = jnp.int32(T - 1 if reverse else 0)
  (carry, _, _), ys = lax.scan(
    body, (init, load(first), first), None, length=T, reverse=reverse, unroll=unroll
  )
  return carry, ys


def masked_step(
  cell: Cell, params: Params, carry: Carry, zx_t: Array, m_t: Array | None
) -> tuple[Carry, Any]:
  """One fast step that holds the carry where ``m_t`` is False."""
  new, res = cell.fast_step(params, carry, zx_t)
  return hold(m_t, new, carry), res


def mask_outputs(hs: Array, mask: Array | None) -> Array:
  """Zero the outputs ``hs: [T, B, H]`` past each length (``mask: [T, B]``)."""
  return hs if mask is None else jnp.where(mask[..., None], hs, jnp.zeros((), hs.dtype))


def forward(
  cell: Cell,
  params: Params,
  zx: Array,
  carry0: Carry,
  mask: Array | None,
  unroll: int = 1,
  keep: bool = False,
  resets: Array | None = None,
  reset_carry: Carry | None = None,
) -> tuple[Any, ...]:
  """Run the kernel over ``zx: [T, B, kH]``.

  ``resets: [T, B]`` bool (or None) replaces the carry by ``reset_carry``
  (default ``carry0``) before each marked step. A reset must not fall on a
  padded step (`rnnjax.scan` masks them), so padding holds the carry unchanged.

  Returns ``(carry_T, ys)`` and, with ``keep=True``, also the stacked carries
  and residuals the hand-written backward needs.
  """
  init = carry0 if reset_carry is None else reset_carry

  def body(carry: Carry, inp: tuple[Array, Array | None, Array | None]) -> tuple[Carry, Any]:
    zx_t, m_t, r_t = inp
    new, res = masked_step(cell, params, reset(r_t, carry, init), zx_t, m_t)
    return new, ((new, res) if keep else outputs(cell, new, res))

  carry_T, out = scan(body, carry0, (zx, mask, resets), unroll=unroll)
  if keep:
    carries, res = out
    return carry_T, mask_outputs(outputs(cell, carries, res), mask), carries, res
  return carry_T, mask_outputs(out, mask)


def outputs(cell: Cell, carry: Carry, res: Any) -> Array:
  """A step's output, ``y = step_output(carry, residuals)`` of the compiled cell."""
  return cell.compiled.step_output(carry, res)

"""The one forward scan kernel every cell and every backward mode shares.

Data flow (time-major, valid steps a prefix of each sequence):

    xs [T, B, I] --(one matmul over all T·B rows)--> zx [T, B, kH]
    zx --lax.scan(cell.fast_step, masked hold)--> carries [T, ...], residuals [T, ...]

Past a sequence's length the carry is held (``carry_t = carry_{t-1}``), so the
last carry is the carry at each sequence's last valid step, and the output is
zero.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src.cells.base import Cell
from rnnjax._src.typing import Array, Carry, Params


def hold(m: Array | None, new: Any, old: Any) -> Any:
  """``new`` where the step is valid (``m: [B]``), else ``old``; ``m=None``: new."""
  if m is None:
    return new
  return jax.tree.map(lambda a, b: jnp.where(m[:, None], a, b), new, old)


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
) -> tuple[Any, ...]:
  """Run the kernel over ``zx: [T, B, kH]``.

  Returns ``(carry_T, ys)`` and, with ``keep=True``, also the stacked carries
  and residuals the hand-written backward needs.
  """

  def body(carry: Carry, inp: tuple[Array, Array | None]) -> tuple[Carry, Any]:
    zx_t, m_t = inp
    new, res = masked_step(cell, params, carry, zx_t, m_t)
    return new, ((new, res) if keep else outputs(cell, new, res))

  carry_T, out = lax.scan(body, carry0, (zx, mask), unroll=unroll)
  if keep:
    carries, res = out
    return carry_T, mask_outputs(outputs(cell, carries, res), mask), carries, res
  return carry_T, mask_outputs(out, mask)


def outputs(cell: Cell, carry: Carry, res: Any) -> Array:
  """A step's output: ``cell.step_output(carry, res)`` when the cell has one, else
  ``cell.output(carry)`` (``h``)."""
  return cell.output(carry) if cell.step_output is None else cell.step_output(carry, res)

"""A cell's step as the Pallas kernel runs it: the `Rule` record and its matmuls.

The Pallas kernel (`rnnjax._src.pallas_rnn`) runs a step on ``[Bb, Hp]`` tiles:
the gate blocks of ``zx`` and ``w_h`` are separate tiles, not slices of one
``[B, kH]`` array. A built-in cell's file (`rnnjax._src.cells.lstm`, ``gru``,
``elman``) declares its `Rule`, written with the same elementwise functions its
XLA step, hand-written backward and closed-form Jacobian use, and hands it to
`rnnjax.custom_cell`'s compiled form; the kernel reads it from there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax.numpy as jnp
from jax import lax

from rnnjax._src.typing import Array

Blocks = Sequence[Array]
"""A list of ``[Bb, Hp]`` tiles: the gate blocks of a step, or a carry's leaves."""


def mm(a: Array, w: Array, cdt: Any, acc: Any) -> Array:
  """``a @ w`` in the compute dtype, accumulated in ``acc``."""
  return jnp.dot(a.astype(cdt), w, preferred_element_type=acc)


def mm_t(a: Array, w: Array, cdt: Any, acc: Any) -> Array:
  """``a @ wᵀ`` (contracting both last axes), accumulated in ``acc``."""
  return lax.dot_general(a.astype(cdt), w, (((1,), (1,)), ((), ())), preferred_element_type=acc)


def mm_t_gates(dz: Blocks, w: Blocks, cdt: Any, acc: Any) -> Array:
  """``Σ_k dz_k @ w_kᵀ``: the gate rows ``[dz_1|..|dz_G]`` times ``w_hᵀ``."""
  out = mm_t(dz[0], w[0], cdt, acc)
  for a, b in zip(dz[1:], w[1:], strict=True):
    out = out + mm_t(a, b, cdt, acc)
  return out


def outer_grads(h_prev: Array, res: Array | None, dzh: Array, acc: Any) -> tuple[Array, None]:
  """``dw_h = H_prevᵀ dZh`` over all rows, no second weight."""
  del res
  return jnp.matmul(h_prev.T, dzh, preferred_element_type=acc), None


class Rule(NamedTuple):
  """One cell's step as the kernels run it, on ``[Bb, Hp]`` tiles.

  Attributes:
    gates: G, the gate blocks of ``zx`` and ``w_h``.
    leaves: the carry's leaves (1: ``h``; 2: the LSTM's ``h, c``).
    residuals: the ``[Bb, Hp]`` tiles a step keeps for its backward.
    forward: ``(w, b_hn, carry, zx, cdt, acc) -> (carry, residuals)``; ``w``
      holds the G ``[Hp, Hp]`` blocks of ``w_h``, ``zx`` the G tiles in ``acc``.
    backward: ``(w, b_hn, prev, cur, res, d, cdt, acc) -> (d_prev, dzx, dzh)``,
      with ``d`` the carry's cotangent after the output's has been added to ``h``.
    weight_grads: ``(h_prev, res, dzh, acc) -> (dw_h, db_hn)`` over all ``N``
      rows (``[N, Hp]``, ``[N, R·Hp]``, ``[N, G·Hp]``), outside the kernel.
    split: the backward's ``dzh`` differs from ``dzx`` and is stored apart.
    bias: the params field of a recurrent-side bias ``[H]`` the kernel passes
      as ``b_hn`` (``"b_hn"`` for the reset-after GRU), or None for zeros.
    ffi: the step of the C++ CPU kernel (`rnnjax._src.cpu_kernel`) that computes
      this same math (``"lstm"``, ``"gru"``, ``"elman-tanh"``, ...), or None
      where it has none.
  """

  gates: int
  leaves: int
  residuals: int
  forward: Callable[..., tuple[Blocks, Blocks]]
  backward: Callable[..., tuple[Blocks, Blocks, Blocks]]
  weight_grads: Callable[..., tuple[Array, Array | None]]
  split: bool = False
  bias: str | None = None
  ffi: str | None = None

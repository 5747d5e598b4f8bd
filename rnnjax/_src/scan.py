"""`rnnjax.scan`: run a cell over a sequence.

One entry point for every cell: it checks the call (at trace time, before any
compute), hoists the input projection out of the loop, masks padding by
``lengths``, reverses each sequence inside its own length, and dispatches to a
backward mode:

* ``"bptt"``: the hand-written BPTT (`rnnjax.bptt_scan`), the default;
* ``"autodiff"``: ``jax.grad`` through ``lax.scan`` of the same kernel;
* ``"checkpoint"``: autodiff with rematerialisation in chunks of
  ``checkpoint_every`` steps (default ``ceil(sqrt(T))``), so the stored
  activations grow like ``T/k + k·(per-step)`` = O(√T) instead of O(T).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src import bptt, checks, kernel
from rnnjax._src.cells.base import Cell, compute_dtypes
from rnnjax._src.typing import Array, Carry, Params

Backward = Literal["auto", "bptt", "autodiff", "checkpoint"]
BACKWARDS = ("auto", "bptt", "autodiff", "checkpoint")


def scan(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  lengths: Array | None = None,
  reverse: bool = False,
  unroll: int = 1,
  time_major: bool = True,
  backward: Backward = "auto",
  checkpoint_every: int | None = None,
) -> tuple[Carry, Array]:
  """Run ``cell`` over ``xs`` and return ``(carry, ys)``.

  Args:
    cell: a `rnnjax.Cell` (``rj.elman``, ``rj.gru``, ``rj.lstm``).
    params: the cell's params, from ``cell.init(key, I)``.
    xs: ``[T, B, I]`` floating inputs (``[B, T, I]`` with ``time_major=False``).
    carry: the initial carry for batch ``B`` (default zeros).
    lengths: optional ``[B]`` ints in ``[0, T]``. Outputs past a length are
      zeros and the returned carry is the carry after each sequence's last
      valid step.
    reverse: run each sequence backwards (inside its length when ``lengths``
      is given). ``ys[t]`` still belongs to ``xs[t]``.
    unroll: ``lax.scan`` unroll factor (positive int).
    time_major: ``xs`` and ``ys`` are ``[T, B, ·]`` (default) or ``[B, T, ·]``.
    backward: ``"auto"`` (= ``"bptt"``), ``"bptt"``, ``"autodiff"`` or
      ``"checkpoint"``; all give the same values and gradients.
    checkpoint_every: chunk length of ``"checkpoint"`` (default ⌈√T⌉).

  Returns:
    ``(carry, ys)``: the carry after each sequence's last valid step (leaves
    ``[B, H]``) and the outputs ``ys: [T, B, H]`` (or ``[B, T, H]``).

  Raises:
    TypeError: ``cell`` is not a `rnnjax.Cell`, ``xs`` is not floating
      point, or ``lengths`` are not integers.
    ValueError: a shape, an option or a length does not fit; the message
      names the argument and the fix.

  Examples:
    >>> import jax, rnnjax as rj
    >>> cell = rj.lstm(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jax.numpy.ones((5, 2, 3)))
    >>> ys.shape, carry.h.shape
    ((5, 2, 8), (2, 8))
  """
  if not isinstance(cell, Cell):
    raise TypeError(
      f"rnnjax.scan: cell must be an rnnjax Cell (e.g. rj.lstm(H)), got {type(cell).__name__}"
    )
  if backward not in BACKWARDS:
    raise ValueError(f"rnnjax.scan: unknown backward {backward!r}; expected one of {BACKWARDS}")
  checks.positive_int("unroll", unroll, "rnnjax.scan")
  xs = check_inputs(cell, params, xs, time_major, "rnnjax.scan")
  if not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  T, B, _ = xs.shape
  carry = check_carry(cell, params, xs, carry, B, "rnnjax.scan")
  mask = None
  if lengths is not None:
    lengths = checks.lengths(lengths, T, B, "rnnjax.scan")
    mask = jnp.arange(T)[:, None] < lengths[None, :]  # [T, B]
  if reverse:
    xs = flip(xs, lengths)

  mode = "bptt" if backward == "auto" else backward
  if mode == "bptt":
    carry, ys = bptt.bptt_scan(cell, unroll, params, xs, carry, mask)
  elif mode == "autodiff":
    zx = cell.project(params, xs)  # [T, B, kH]
    carry, ys = kernel.forward(cell, params, zx, carry, mask, unroll)
  else:
    k = max(1, math.ceil(math.sqrt(T))) if checkpoint_every is None else checkpoint_every
    checks.positive_int("checkpoint_every", k, "rnnjax.scan")
    carry, ys = _checkpointed(cell, params, xs, carry, mask, unroll, k)

  if reverse:
    ys = flip(ys, lengths)
  if not time_major:
    ys = jnp.swapaxes(ys, 0, 1)
  return carry, ys


def flip(xs: Array, lengths: Array | None = None) -> Array:
  """Reverse ``xs: [T, B, ...]`` in time, each sequence inside its length.

  Positions past a length stay where they are. The map is its own inverse.

  Args:
    xs: ``[T, B, ...]``.
    lengths: optional ``[B]`` valid lengths.

  Returns:
    The flipped ``[T, B, ...]`` array.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> xs = jnp.arange(4.0).reshape(4, 1, 1) * jnp.ones((1, 2, 1))
    >>> rj.flip(xs, jnp.array([4, 2]))[:, :, 0].T.tolist()
    [[3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 2.0, 3.0]]
  """
  if lengths is None:
    return xs[::-1]
  T = xs.shape[0]
  t = jnp.arange(T)[:, None]  # [T, 1]
  idx = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
  idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
  return jnp.take_along_axis(xs, idx, axis=0)


def _checkpointed(
  cell: Cell, params: Params, xs: Array, carry: Carry, mask: Array | None, unroll: int, k: int
) -> tuple[Carry, Array]:
  """The kernel in chunks of k steps; each chunk (projection included) is
  recomputed in the backward pass, so only chunk-boundary carries are stored."""
  T, B, I = xs.shape
  n = -(-T // k)
  pad = n * k - T
  valid = jnp.ones((T, B), bool) if mask is None else mask
  xs_c = jnp.pad(xs, ((0, pad), (0, 0), (0, 0))).reshape(n, k, B, I)
  m_c = jnp.pad(valid, ((0, pad), (0, 0))).reshape(n, k, B)

  @jax.checkpoint
  def chunk(c: Carry, inp: tuple[Array, Array]) -> tuple[Any, ...]:
    x, m = inp
    zx = cell.project(params, x)  # [k, B, kH]
    return kernel.forward(cell, params, zx, c, m, unroll)

  carry, ys = lax.scan(chunk, carry, (xs_c, m_c))
  return carry, ys.reshape(n * k, B, -1)[:T]


# ---------------------------------------------------------------- checks


def check_inputs(cell: Cell, params: Params, xs: Any, time_major: bool, what: str) -> Array:
  """Rank, dtype and feature size of ``xs``; returns it as a jax array."""
  if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
    xs = jnp.asarray(xs)
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    kind = "integer" if jnp.issubdtype(xs.dtype, jnp.integer) else str(xs.dtype)
    raise TypeError(
      f"{what}: xs must be floating point, got {kind} dtype {xs.dtype} "
      f"(xs.shape={tuple(xs.shape)}); token ids go through rj.embedding first, "
      f"other data through xs.astype(jnp.float32)"
    )
  layout = "[T, B, I]" if time_major else "[B, T, I]"
  if xs.ndim != 3:
    raise ValueError(
      f"{what}: xs must have rank 3 {layout}, got rank {xs.ndim} with shape "
      f"{tuple(xs.shape)}; add a batch axis (xs[:, None] for one sequence) or "
      f"jax.vmap over extra axes"
    )
  input_size = params.w_x.shape[0]
  if xs.shape[-1] != input_size:
    raise ValueError(
      f"{what}: xs has feature size {xs.shape[-1]} but params expect input_size "
      f"{input_size} (xs.shape={tuple(xs.shape)}, layout {layout}); init the cell "
      f"with cell.init(key, {xs.shape[-1]}) or fix the inputs"
    )
  return xs


def check_carry(
  cell: Cell, params: Params, xs: Array, carry: Carry | None, B: int, what: str
) -> Carry:
  """Default zeros, else the structure and shapes of ``cell.initial_carry((B,))``."""
  cdt, _ = compute_dtypes(cell.dtype, xs, params.w_x)
  expected = cell.initial_carry((B,), cdt)
  if carry is None:
    return expected
  # Any: jaxlib defines PyTreeDef in a compiled module without a stub, so mypy
  # cannot see its comparison operators.
  got_struct: Any = jax.tree.structure(carry)
  exp_struct: Any = jax.tree.structure(expected)
  if got_struct != exp_struct:
    raise ValueError(
      f"{what}: carry has structure {got_struct} but {cell!r} "
      f"expects {exp_struct}; use cell.initial_carry(({B},))"
    )
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected), strict=True):
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(
        f"{what}: carry leaf has shape {tuple(got.shape)} but batch B={B} and "
        f"hidden_size H={cell.hidden_size} need {tuple(want.shape)}; use "
        f"cell.initial_carry(({B},))"
      )
  return jax.tree.map(lambda c: jnp.asarray(c).astype(cdt), carry)

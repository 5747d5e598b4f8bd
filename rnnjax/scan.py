"""`rnnjax.scan`: run a cell over a sequence.

One entry point for every cell: it checks the call (at trace time, before any
compute), hoists the input projection out of the loop, masks padding by
``lengths``, reverses each sequence inside its own length, and dispatches to a
backward mode:

* ``"bptt"``: the hand-written BPTT (`rnnjax.bptt.bptt_scan`), the default;
* ``"autodiff"``: ``jax.grad`` through ``lax.scan`` of the same kernel;
* ``"checkpoint"``: autodiff with rematerialisation in chunks of
  ``checkpoint_every`` steps (default ``ceil(sqrt(T))``), so the stored
  activations grow like ``T/k + k·(per-step)`` = O(√T) instead of O(T).
"""

from __future__ import annotations

import math
from typing import Optional

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax import bptt, kernel
from rnnjax.cells import base

BACKWARDS = ("auto", "bptt", "autodiff", "checkpoint")


def scan(cell: base.Cell, params, xs, carry=None, *, lengths=None,
         reverse: bool = False, unroll: int = 1, time_major: bool = True,
         backward: str = "auto", checkpoint_every: Optional[int] = None):
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
    ``(carry, ys)`` with ``ys: [T, B, H]`` (or ``[B, T, H]``).

  >>> import jax, rnnjax as rj
  >>> cell = rj.lstm(8)
  >>> params = cell.init(jax.random.key(0), 3)
  >>> carry, ys = rj.scan(cell, params, jax.numpy.ones((5, 2, 3)))
  >>> ys.shape, carry.h.shape
  ((5, 2, 8), (2, 8))
  """
  if not isinstance(cell, base.Cell):
    raise TypeError(f"rnnjax.scan: cell must be an rnnjax Cell (e.g. rj.lstm(H)), "
                    f"got {type(cell).__name__}")
  if backward not in BACKWARDS:
    raise ValueError(f"rnnjax.scan: unknown backward {backward!r}; expected one of {BACKWARDS}")
  if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
    raise ValueError(f"rnnjax.scan: unroll must be a positive int, got {unroll!r}")
  xs = check_inputs(cell, params, xs, time_major, "rnnjax.scan")
  if not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  T, B, _ = xs.shape
  carry = check_carry(cell, params, xs, carry, B, "rnnjax.scan")
  mask = None
  if lengths is not None:
    lengths = check_lengths(lengths, T, B, "rnnjax.scan")
    mask = jnp.arange(T)[:, None] < lengths[None, :]          # [T, B]
  if reverse:
    xs = flip(xs, lengths)

  mode = "bptt" if backward == "auto" else backward
  if mode == "bptt":
    carry, ys = bptt.bptt_scan(cell, unroll, params, xs, carry, mask)
  elif mode == "autodiff":
    zx = kernel.project(cell, params, xs)
    carry, ys = kernel.forward(cell, params, zx, carry, mask, unroll)
  else:
    k = checkpoint_every or max(1, math.ceil(math.sqrt(T)))
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
      raise ValueError(f"rnnjax.scan: checkpoint_every must be a positive int, got {k!r}")
    carry, ys = _checkpointed(cell, params, xs, carry, mask, unroll, k)

  if reverse:
    ys = flip(ys, lengths)
  if not time_major:
    ys = jnp.swapaxes(ys, 0, 1)
  return carry, ys


def flip(xs, lengths=None):
  """Reverse ``xs: [T, B, ...]`` in time, each sequence inside its length.

  Positions past a length stay where they are. The map is its own inverse.
  """
  if lengths is None:
    return xs[::-1]
  T = xs.shape[0]
  t = jnp.arange(T)[:, None]                                  # [T, 1]
  idx = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)   # [T, B]
  idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
  return jnp.take_along_axis(xs, idx, axis=0)


def _checkpointed(cell, params, xs, carry, mask, unroll, k):
  """The kernel in chunks of k steps; each chunk (projection included) is
  recomputed in the backward pass, so only chunk-boundary carries are stored."""
  T, B, I = xs.shape
  n = -(-T // k)
  pad = n * k - T
  valid = jnp.ones((T, B), bool) if mask is None else mask
  xs_c = jnp.pad(xs, ((0, pad), (0, 0), (0, 0))).reshape(n, k, B, I)
  m_c = jnp.pad(valid, ((0, pad), (0, 0))).reshape(n, k, B)

  @jax.checkpoint
  def chunk(c, inp):
    x, m = inp
    zx = kernel.project(cell, params, x)                      # [k, B, kH]
    return kernel.forward(cell, params, zx, c, m, unroll)

  carry, ys = lax.scan(chunk, carry, (xs_c, m_c))
  return carry, ys.reshape(n * k, B, -1)[:T]


# ---------------------------------------------------------------- checks


def check_inputs(cell, params, xs, time_major, what):
  """Rank, dtype and feature size of ``xs``; returns it as a jax array."""
  if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
    xs = jnp.asarray(xs)
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    kind = "integer" if jnp.issubdtype(xs.dtype, jnp.integer) else str(xs.dtype)
    raise TypeError(
        f"{what}: xs must be floating point, got {kind} dtype {xs.dtype} "
        f"(xs.shape={tuple(xs.shape)}); token ids go through rj.embedding first, "
        f"other data through xs.astype(jnp.float32)")
  layout = "[T, B, I]" if time_major else "[B, T, I]"
  if xs.ndim != 3:
    raise ValueError(
        f"{what}: xs must have rank 3 {layout}, got rank {xs.ndim} with shape "
        f"{tuple(xs.shape)}; add a batch axis (xs[:, None] for one sequence) or "
        f"jax.vmap over extra axes")
  input_size = params.w_x.shape[0]
  if xs.shape[-1] != input_size:
    raise ValueError(
        f"{what}: xs has feature size {xs.shape[-1]} but params expect input_size "
        f"{input_size} (xs.shape={tuple(xs.shape)}, layout {layout}); init the cell "
        f"with cell.init(key, {xs.shape[-1]}) or fix the inputs")
  return xs


def check_carry(cell, params, xs, carry, B, what):
  """Default zeros, else the structure and shapes of ``cell.initial_carry((B,))``."""
  cdt, _ = base.compute_dtypes(cell.dtype, xs, params.w_x)
  expected = cell.initial_carry((B,), cdt)
  if carry is None:
    return expected
  exp_struct = jax.tree.structure(expected)
  if jax.tree.structure(carry) != exp_struct:
    raise ValueError(
        f"{what}: carry has structure {jax.tree.structure(carry)} but {cell!r} "
        f"expects {exp_struct}; use cell.initial_carry(({B},))")
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected)):
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(
          f"{what}: carry leaf has shape {tuple(got.shape)} but batch B={B} and "
          f"hidden_size H={cell.hidden_size} need {tuple(want.shape)}; use "
          f"cell.initial_carry(({B},))")
  return jax.tree.map(lambda c: jnp.asarray(c).astype(cdt), carry)


def check_lengths(lengths, T, B, what):
  """``lengths: [B]`` integers in ``[0, T]`` (values checked when concrete)."""
  if not hasattr(lengths, "shape"):
    lengths = jnp.asarray(lengths)
  if not jnp.issubdtype(lengths.dtype, jnp.integer):
    raise TypeError(f"{what}: lengths must be integers, got dtype {lengths.dtype}; "
                    f"use lengths.astype(jnp.int32)")
  if tuple(lengths.shape) != (B,):
    raise ValueError(f"{what}: lengths must have shape (B,) = ({B},), got "
                     f"{tuple(lengths.shape)}; one length per sequence in the batch")
  values = base.concrete(lengths)
  if values is not None:
    if values.size and (values.min() < 0 or values.max() > T):
      raise ValueError(f"{what}: lengths must lie in [0, T={T}], got min "
                       f"{values.min()} and max {values.max()}; clip them or pad "
                       f"xs to the longest sequence")
  return jnp.asarray(lengths)

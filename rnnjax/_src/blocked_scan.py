"""An associative scan whose compiled size does not grow with T (`prefix`).

``jax.lax.associative_scan`` unrolls its O(log T) levels into the program: about
2·log₂T copies of the combine, each at its own shapes, and XLA compiles every
copy. For a cheap combine that is nothing; for ELK's Kalman combine (an LU
factorisation, solves and a dozen matmuls) it was most of a first call: about 5 s
to compile against 3 ms to run at T = 200, S = 12 on a 2-core CPU, growing with T.

`prefix` computes the same inclusive scan with the combine in three places only:

1. the sequence is cut into blocks of ``block`` steps (padded with the identity);
   a ``lax.scan`` over the ``block`` positions combines, all blocks at once, each
   block's running prefix;
2. the blocks' totals are scanned by Hillis & Steele's doubling, a
   ``lax.fori_loop`` over ⌈log₂(T / block)⌉ levels, each combining every total
   with the one 2ᵈ before it (the identity where there is none);
3. one batched combine applies each block's exclusive prefix to its entries.

Work: about 2T + (T / block)·log₂(T / block) combines (``associative_scan``: about
2T); depth: block + log₂(T / block) + 1 (``associative_scan``: about 2·log₂T), so
with ``block = 16`` the depth at T = 100 000 is 30 against 34.

Reference: Hillis & Steele (1986), "Data parallel algorithms", Communications of
the ACM 29(12); Blelloch (1990), "Prefix sums and their applications" (the
blocked two-level form).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src.typing import Array

E = TypeVar("E")

BLOCK = 16
"""Steps per block. Measured for ELK's smoother (S = 12, float32, CPU): 8, 16 and
32 compile alike (≈2 s for the whole smoother, against 5–10 s with
``lax.associative_scan`` from T = 200 to 5000); 16 ran fastest at T = 1000 and on
par with ``associative_scan`` at T = 200."""


def _length(elems: Any) -> int:
  leaves = jax.tree.leaves(elems)
  if not leaves:
    raise ValueError("prefix: elems has no arrays")
  n = leaves[0].shape[0]
  for leaf in leaves:
    if leaf.shape[:1] != (n,):
      shapes = [leaf.shape for leaf in leaves]
      raise ValueError(
        f"prefix: every array in elems needs the same leading (time) axis, got shapes {shapes}"
      )
  return n


def _doubling(combine: Callable[[E, E], E], x: E, identity: E) -> E:
  """Hillis & Steele's inclusive scan over axis 0, one compiled level in a loop."""
  n = _length(x)
  idx = jnp.arange(n)

  def level(d: Array, x: E) -> E:
    shift = jnp.left_shift(1, d)
    has = idx >= shift

    def before(a: Array, e: Array) -> Array:  # x[i - 2ᵈ], the identity for i < 2ᵈ
      keep = has.reshape((n,) + (1,) * (a.ndim - 1))
      return jnp.where(keep, jnp.roll(a, shift, axis=0), e.astype(a.dtype))

    return combine(jax.tree.map(before, x, identity), x)

  return lax.fori_loop(0, max(0, (n - 1).bit_length()), level, x)


def prefix(
  combine: Callable[[E, E], E], elems: E, identity: E, *, reverse: bool = False, block: int = BLOCK
) -> E:
  """The inclusive scan of ``elems`` under ``combine``, as ``lax.associative_scan``.

  Args:
    combine: associative, ``combine(earlier, later)``, on pytrees whose arrays carry
      any number of leading batch axes (it is called on ``[n, ...]`` and on
      ``[1, n, ...]`` against ``[k, n, ...]`` stacks, broadcasting).
    elems: a pytree of arrays ``[T, ...]``.
    identity: one element (the arrays of ``elems`` without the T axis) with
      ``combine(identity, e) == e``; it pads the last block and starts the doubling.
    reverse: scan from t = T down: ``out[t]`` combines ``elems[t:]``, and, as in
      ``lax.associative_scan(..., reverse=True)``, ``combine``'s first argument is
      then the later element.
    block: steps per block (`BLOCK`).

  Returns:
    A pytree like ``elems``: ``out[t] = elems[0] ⊗ … ⊗ elems[t]``.

  Raises:
    ValueError: arrays of different lengths, or a ``block`` below 1.
  """
  if block < 1:
    raise ValueError(f"prefix: block must be at least 1, got block={block}")
  T = _length(elems)
  if T == 0:
    return elems
  if reverse:
    flip = lambda x: jax.tree.map(lambda a: jnp.flip(a, 0), x)  # noqa: E731
    return flip(prefix(combine, flip(elems), identity, block=block))
  nb = -(-T // block)  # blocks, the last padded with the identity

  def blocks(a: Array, e: Array) -> Array:  # [T, ...] -> [block, nb, ...]
    pad = jnp.broadcast_to(e, (nb * block - T, *e.shape)).astype(a.dtype)
    return jnp.moveaxis(jnp.concatenate([a, pad]).reshape(nb, block, *a.shape[1:]), 1, 0)

  x = jax.tree.map(blocks, elems, identity)

  def running(carry: E, xi: E) -> tuple[E, E]:
    out = combine(carry, xi)
    return out, out

  first = jax.tree.map(lambda a: a[0], x)
  total, later = lax.scan(running, first, jax.tree.map(lambda a: a[1:], x))
  inner = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), first, later)
  before = _doubling(combine, total, identity)  # inclusive over the blocks' totals
  shift = lambda a, e: jnp.concatenate([e[None].astype(a.dtype), a[:-1]])  # noqa: E731
  before = jax.tree.map(shift, before, identity)  # exclusive: the blocks before each
  out = combine(jax.tree.map(lambda a: a[None], before), inner)  # [block, nb, ...]
  return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1).reshape(nb * block, *a.shape[2:])[:T], out)

"""Linear recurrences ``s_t = J_t s_{t-1} + b_t`` for all t at once, by one
``jax.lax.associative_scan`` over the affine maps ``s ↦ J s + b`` (O(log T) depth).

The one home of this solve: DEER's Newton steps and its adjoint
(`rnnjax.parallel_scan`) and the smoother of ELK's Kalman step (`kalman`) use it.
``blocked=True`` runs the same scan as `blocked_scan.prefix`, whose compiled
program does not grow with T (the Kalman smoother, compiled with a costly filter
beside it, takes that form).
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from rnnjax._src import blocked_scan
from rnnjax._src.typing import Array


def _compose_full(first: tuple[Array, Array], then: tuple[Array, Array]) -> tuple[Array, Array]:
  """``s ↦ A2 (A1 s + b1) + b2`` as ``(A2 A1, A2 b1 + b2)``."""
  a1, b1 = first
  a2, b2 = then
  return a2 @ a1, (a2 @ b1[..., None])[..., 0] + b2


def _compose_diag(first: tuple[Array, Array], then: tuple[Array, Array]) -> tuple[Array, Array]:
  """The same with diagonal ``A`` (elementwise)."""
  a1, b1 = first
  a2, b2 = then
  return a2 * a1, a2 * b1 + b2


def solve(
  jac: Array, b: Array, s0: Array, diag: bool, reverse: bool = False, blocked: bool = False
) -> Array:
  """All ``s_t = J_t s_{t-1} + b_t`` (t = 1..T) from ``s_0``.

  Args:
    jac: ``[T, ..., S, S]`` (``[T, ..., S]`` when ``diag``).
    b: ``[T, ..., S]``.
    s0: ``[..., S]``.
    diag: ``jac`` holds diagonals.
    reverse: run from t = T down, ``s_t = J_t s_{t+1} + b_t`` with
      ``s_{T+1} = s0``.
    blocked: scan with `blocked_scan.prefix` (a compiled size independent of T)
      instead of ``lax.associative_scan`` (the same values to rounding).

  Returns:
    ``s: [T, ..., S]``, ``s_1..s_T``.
  """
  first = 0 if not reverse else -1
  if diag:
    b = b.at[first].add(jac[first] * s0)
  else:
    b = b.at[first].add((jac[first] @ s0[..., None])[..., 0])
  compose = _compose_diag if diag else _compose_full
  if blocked:
    one = jnp.ones(jac.shape[1:], jac.dtype) if diag else jnp.eye(jac.shape[-1], dtype=jac.dtype)
    identity = (jnp.broadcast_to(one, jac.shape[1:]), jnp.zeros(b.shape[1:], b.dtype))
    _, s = blocked_scan.prefix(compose, (jac, b), identity, reverse=reverse)
  else:
    _, s = lax.associative_scan(compose, (jac, b), reverse=reverse)
  return s

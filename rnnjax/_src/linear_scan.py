"""Linear recurrences ``s_t = J_t s_{t-1} + b_t`` for all t at once, by one
``jax.lax.associative_scan`` over the affine maps ``s ↦ J s + b`` (O(log T) depth).

The one home of this solve: DEER's Newton steps and its adjoint
(`rnnjax.parallel_scan`) and the smoother of ELK's Kalman step (`kalman`) use it.
"""

from __future__ import annotations

from jax import lax

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


def solve(jac: Array, b: Array, s0: Array, diag: bool, reverse: bool = False) -> Array:
  """All ``s_t = J_t s_{t-1} + b_t`` (t = 1..T) from ``s_0``.

  Args:
    jac: ``[T, ..., S, S]`` (``[T, ..., S]`` when ``diag``).
    b: ``[T, ..., S]``.
    s0: ``[..., S]``.
    diag: ``jac`` holds diagonals.
    reverse: run from t = T down, ``s_t = J_t s_{t+1} + b_t`` with
      ``s_{T+1} = s0``.

  Returns:
    ``s: [T, ..., S]``, ``s_1..s_T``.
  """
  first = 0 if not reverse else -1
  if diag:
    b = b.at[first].add(jac[first] * s0)
  else:
    b = b.at[first].add((jac[first] @ s0[..., None])[..., 0])
  compose = _compose_diag if diag else _compose_full
  _, s = lax.associative_scan(compose, (jac, b), reverse=reverse)
  return s

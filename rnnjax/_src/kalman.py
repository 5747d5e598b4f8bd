"""ELK's Levenberg–Marquardt step: a parallel Kalman smoother (`lm_smooth`).

Full ELK (Gonzalez et al. 2024) damps each DEER step towards the current iterate
``o``: with the linearisation ``s_t ≈ A_t s_{t-1} + b_t`` (``A_t`` the full
``[S, S]`` Jacobian), the step is the minimiser over ``s_1..s_T`` of

    Σ_t ‖s_t − A_t s_{t-1} − b_t‖²  +  λ Σ_t ‖s_t − o_t‖²        (s_0 fixed)

which is the smoothed mean of the linear-Gaussian state-space model

    s_t = A_t s_{t-1} + b_t + q_t,   q_t ~ N(0, I)        (dynamics, Q = I)
    o_t = s_t + r_t,                 r_t ~ N(0, I / λ)    (observations, precision λ)

with ``s_0`` known exactly. ``λ = 0`` gives DEER's step (the observations say
nothing); ``λ → ∞`` stays at ``o``.

Both passes are associative scans (Särkkä & García-Fernández 2021), O(log T) deep,
run as `blocked_scan.prefix`: ``lax.associative_scan`` would compile the costly
combine about 2·log₂T times over (5 s of a 6 s first ELK call at S = 12, T = 200).

*Filter.* Element t is the filter of step t alone, given ``s_{t-1}``:
``p(s_t | s_{t-1}, o_t) = N(F_t s_{t-1} + u_t, C_t)`` and, in information form,
``p(o_t | s_{t-1}) ∝ exp(−½ sᵀ J_t s + sᵀ η_t)``. With observation precision λ
and ``c = 1 / (1 + λ)``:

    F_t = c A_t,   u_t = c (b_t + λ o_t),   C_t = c I,
    J_t = λc A_tᵀ A_t,   η_t = λc A_tᵀ (o_t − b_t)

(``F_1 = 0``, ``u_1 = c (A_1 s_0 + b_1 + λ o_1)``, ``J_1 = 0``, ``η_1 = 0``, since
``s_0`` is known). No 1/λ appears, so λ = 0 is the plain recurrence. Two
elements, i before j, combine (with ``G = I + C_i J_j``) as

    F = F_j G⁻¹ F_i                  u = F_j G⁻¹ (u_i + C_i η_j) + u_j
    C = F_j G⁻¹ C_i F_jᵀ + C_j       η = F_iᵀ G⁻ᵀ (η_j − J_j u_i) + η_i
    J = F_iᵀ G⁻ᵀ J_j F_i + J_i

``G`` has real eigenvalues ≥ 1 (it is similar to ``I + C^½ J C^½``), so it is
never singular, and it is I at λ = 0; ``G⁻¹`` comes from one LU solve against
the identity and serves ``G⁻ᵀ`` too (one chain of LAPACK calls per combination:
two independent batched solves deadlock jaxlib 0.10's CPU kernels on a 2-thread
pool, where each waits on the pool for its batch). The prefix combinations give the filtered means
``m_t`` (the ``u`` part: the prefix ``F`` is 0) and covariances ``P_t`` (``C``).

*Smoother.* Rauch–Tung–Striebel, ``s_t = m_t + E_t (s_{t+1} − A_{t+1} m_t −
b_{t+1})``, is the affine recurrence ``s_t = E_t s_{t+1} + g_t`` backwards from
``s_T = m_T``, with the gain ``E_t = P_t A_{t+1}ᵀ Σ_{t+1}⁻¹`` by a Cholesky solve
of the predicted covariance ``Σ_{t+1} = A_{t+1} P_t A_{t+1}ᵀ + I`` (symmetric
positive definite, eigenvalues ≥ 1). It is solved by a reverse associative scan
over the maps ``s ↦ E s + g``; only the means are needed.

References:
  Gonzalez, Warrington, Smith & Linderman (2024), "Towards Scalable and Stable
  Parallelization of Nonlinear RNNs", NeurIPS.
  Särkkä & García-Fernández (2021), "Temporal Parallelization of Bayesian
  Smoothers", IEEE Transactions on Automatic Control 66(1).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jax import lax

from rnnjax._src import blocked_scan, linear_scan
from rnnjax._src.typing import Array


class _Element(NamedTuple):
  """One filter element (or a combination of consecutive ones), one sequence."""

  f: Array  # [..., S, S]  F: the filtered mean's dependence on the state before
  u: Array  # [..., S]     u: its offset
  c: Array  # [..., S, S]  C: the filtered covariance
  eta: Array  # [..., S]   η: the observations' information vector about the state before
  j: Array  # [..., S, S]  J: their information matrix


def _mv(m: Array, v: Array) -> Array:
  """``m @ v`` over leading batch axes: ``[..., S, S], [..., S] -> [..., S]``."""
  return (m @ v[..., None])[..., 0]


def _sym(m: Array) -> Array:
  """The symmetric part, against rounding."""
  return 0.5 * (m + m.mT)


def _eye_like(m: Array) -> Array:
  return jnp.broadcast_to(jnp.eye(m.shape[-1], dtype=m.dtype), m.shape)


def _combine(e1: _Element, e2: _Element) -> _Element:
  """``e1`` (earlier steps) then ``e2`` (later ones), Särkkä & García-Fernández's ⊗."""
  g = _eye_like(e1.c) + e1.c @ e2.j  # G = I + C_i J_j
  # G⁻¹ once (one LU, one chain of triangular solves), then matmuls for G⁻¹ and
  # G⁻ᵀ: two independent solves here would let XLA run two batched LAPACK triangular
  # solves at once, and jaxlib 0.10's CPU kernels, each waiting on the same thread
  # pool for its batch, then deadlock on a 2-thread pool (seen in the notebooks)
  g_inv = jsl.lu_solve(jsl.lu_factor(g), _eye_like(g))
  gf, gc = g_inv @ e1.f, g_inv @ e1.c  # G⁻¹ F_i, G⁻¹ C_i
  gu = _mv(g_inv, e1.u + _mv(e1.c, e2.eta))  # G⁻¹ (u_i + C_i η_j)
  gj = g_inv.mT @ e2.j  # G⁻ᵀ J_j
  geta = _mv(g_inv.mT, e2.eta - _mv(e2.j, e1.u))  # G⁻ᵀ (η_j − J_j u_i)
  return _Element(
    f=e2.f @ gf,  # F = F_j G⁻¹ F_i
    u=_mv(e2.f, gu) + e2.u,  # u = F_j G⁻¹ (u_i + C_i η_j) + u_j
    c=_sym(e2.f @ gc @ e2.f.mT) + e2.c,  # C = F_j G⁻¹ C_i F_jᵀ + C_j
    eta=_mv(e1.f.mT, geta) + e1.eta,  # η = F_iᵀ G⁻ᵀ (η_j − J_j u_i) + η_i
    j=_sym(e1.f.mT @ gj @ e1.f) + e1.j,  # J = F_iᵀ G⁻ᵀ J_j F_i + J_i
  )


def _smooth_one(a: Array, b: Array, s0: Array, guess: Array, lam: Array) -> Array:
  """`lm_smooth` for one sequence: ``a: [T, S, S]``, ``b, guess: [T, S]``, ``s0: [S]``."""
  c = 1.0 / (1.0 + lam)  # posterior variance of one step alone: (1 + λ)⁻¹
  k = lam * c  # precision of o_t about A_t s_{t-1} + b_t: (1 + 1/λ)⁻¹, 0 at λ = 0
  first = jnp.arange(a.shape[0])[:, None] == 0  # [T, 1]: step 1 sees s_0 exactly
  f = jnp.where(first[..., None], 0.0, c * a)  # F_t = c A_t, F_1 = 0
  u = c * (b + lam * guess)  # u_t = c (b_t + λ o_t)
  u = u.at[0].add(c * _mv(a[0], s0))  # u_1 += c A_1 s_0
  cov = c * _eye_like(a)  # C_t = c I
  eta = jnp.where(first, 0.0, k * _mv(a.mT, guess - b))  # η_t = λc A_tᵀ (o_t − b_t)
  j = jnp.where(first[..., None], 0.0, k * (a.mT @ a))  # J_t = λc A_tᵀ A_t
  eye, zero = jnp.eye(a.shape[-1], dtype=a.dtype), jnp.zeros(a.shape[-1], a.dtype)
  identity = _Element(eye, zero, 0 * eye, zero, 0 * eye)  # the empty stretch: s ↦ s
  filt = blocked_scan.prefix(_combine, _Element(f, u, cov, eta, j), identity)
  m, p = filt.u, filt.c  # filtered means and covariances [T, S], [T, S, S]

  a_next, b_next = a[1:], b[1:]  # A_{t+1}, b_{t+1} for t = 1..T-1
  pa = p[:-1] @ a_next.mT  # P_t A_{t+1}ᵀ
  sigma = _sym(a_next @ pa) + _eye_like(pa)  # Σ_{t+1} = A_{t+1} P_t A_{t+1}ᵀ + I
  gain = jsl.cho_solve(jsl.cho_factor(sigma), pa.mT).mT  # E_t = P_t A_{t+1}ᵀ Σ_{t+1}⁻¹
  g = m[:-1] - _mv(gain, _mv(a_next, m[:-1]) + b_next)  # g_t = m_t − E_t (A_{t+1} m_t + b_{t+1})
  gain = jnp.concatenate([gain, jnp.zeros_like(a[:1])], axis=0)  # E_T = 0
  g = jnp.concatenate([g, m[-1:]], axis=0)  # g_T = m_T
  return linear_scan.solve(gain, g, jnp.zeros_like(s0), diag=False, reverse=True, blocked=True)


# Over the batch axis B, compiled once per shape (eagerly, the scans' many small
# steps would each dispatch, and compile, on their own).
_smooth = jax.jit(jax.vmap(_smooth_one, in_axes=(1, 1, 0, 1, None), out_axes=1))


def _check(a: Array, b: Array, s0: Array, guess: Array, lam: Array, what: str) -> None:
  if a.ndim != 4 or a.shape[-1] != a.shape[-2]:
    raise ValueError(f"{what}: a must be [T, B, S, S] (square Jacobians), got a.shape={a.shape}")
  T, B, S = a.shape[:3]
  want = {"b": (b, (T, B, S)), "s0": (s0, (B, S)), "guess": (guess, (T, B, S))}
  for name, (x, shape) in want.items():
    if x.shape != shape:
      raise ValueError(
        f"{what}: {name} has shape {x.shape} but a.shape={a.shape} needs {shape} (T, B, S)"
      )
  if lam.ndim != 0:
    raise ValueError(f"{what}: lam must be a scalar, got lam.shape={lam.shape}")


def _prepare(
  a: Array, b: Array, s0: Array, guess: Array, lam: Array | float, what: str
) -> tuple[Array, Array, Array, Array, Array]:
  """The inputs as arrays of their common dtype, checked."""
  dtype = jnp.result_type(a, b, s0, guess)
  out = tuple(jnp.asarray(x, dtype) for x in (a, b, s0, guess, lam))
  a, b, s0, guess, lam = out
  _check(a, b, s0, guess, lam, what)
  return a, b, s0, guess, lam


def lm_smooth(a: Array, b: Array, s0: Array, guess: Array, lam: Array | float) -> Array:
  """ELK's Levenberg–Marquardt step with full Jacobians, parallel in time.

  The exact minimiser over ``s_1..s_T`` of

      Σ_t ‖s_t − a_t s_{t-1} − b_t‖²  +  λ Σ_t ‖s_t − o_t‖²      (o = ``guess``, s_0 = ``s0``)

  computed as the smoothed means of the state-space model
  ``s_t = a_t s_{t-1} + b_t + q_t``, ``q_t ~ N(0, I)``, ``o_t = s_t + r_t``,
  ``r_t ~ N(0, I/λ)``: a Kalman filter and a Rauch–Tung–Striebel smoother,
  each one associative scan (O(log T) depth; see the module docstring for the
  elements). ``λ = 0`` gives DEER's step ``s_t = a_t s_{t-1} + b_t`` exactly;
  a large λ stays near ``guess``. `lm_smooth_reference` is the sequential
  version.

  Args:
    a: ``[T, B, S, S]``, the Jacobians ``a_t``.
    b: ``[T, B, S]``, the offsets ``b_t``.
    s0: ``[B, S]``, the fixed initial state.
    guess: ``[T, B, S]``, the current iterate ``o_t``.
    lam: scalar λ ≥ 0 (any value up to about 1e8, 0 included).

  Returns:
    ``s: [T, B, S]`` in the arrays' common dtype.

  Raises:
    ValueError: shapes that disagree, or a ``lam`` that is not a scalar.

  References:
    Gonzalez et al. (2024), "Towards Scalable and Stable Parallelization of
    Nonlinear RNNs"; Särkkä & García-Fernández (2021), "Temporal
    Parallelization of Bayesian Smoothers".

  Examples:
    >>> import jax, jax.numpy as jnp
    >>> from rnnjax._src.kalman import lm_smooth
    >>> T, B, S = 12, 2, 4
    >>> a = 0.5 * jnp.broadcast_to(jnp.eye(S), (T, B, S, S))
    >>> b, guess, s0 = jnp.ones((T, B, S)), jnp.zeros((T, B, S)), jnp.zeros((B, S))
    >>> s = lm_smooth(a, b, s0, guess, 0.0)  # λ = 0: s_t = 0.5 s_{t-1} + 1
    >>> s.shape, round(float(s[-1, 0, 0]), 4)
    ((12, 2, 4), 1.9995)
    >>> bool(jnp.allclose(lm_smooth(a, b, s0, guess, 1e8), guess, atol=1e-6))
    True
  """
  return _smooth(*_prepare(a, b, s0, guess, lam, "lm_smooth"))


def _reference_one(a: Array, b: Array, s0: Array, guess: Array, lam: Array) -> Array:
  """`lm_smooth_reference` for one sequence: ``a: [T, S, S]``, ``b, guess: [T, S]``."""
  eye = jnp.eye(a.shape[-1], dtype=a.dtype)

  def filter_step(
    carry: tuple[Array, Array], step: tuple[Array, ...]
  ) -> tuple[tuple[Array, Array], tuple[Array, ...]]:
    m, p = carry  # filtered mean and covariance of s_{t-1}
    a_t, b_t, o_t = step
    m_pred = a_t @ m + b_t  # predict: m⁻_t = A_t m_{t-1} + b_t
    p_pred = a_t @ p @ a_t.T + eye  # P⁻_t = A_t P_{t-1} A_tᵀ + Q, Q = I
    k = jnp.linalg.solve(eye + lam * p_pred, lam * p_pred).T  # K_t = λ P⁻_t (I + λ P⁻_t)⁻¹
    m_new = m_pred + k @ (o_t - m_pred)  # update: m_t = m⁻_t + K_t (o_t − m⁻_t)
    p_new = _sym(p_pred - k @ p_pred)  # P_t = (I − K_t) P⁻_t
    return (m_new, p_new), (m_new, p_new, m_pred, p_pred)

  zero = jnp.zeros_like(eye)  # s_0 is known exactly: P_0 = 0
  _, (m, p, m_pred, p_pred) = lax.scan(filter_step, (s0, zero), (a, b, guess))

  def smooth_step(s_next: Array, step: tuple[Array, ...]) -> tuple[Array, Array]:
    m_t, p_t, a_next, m_pred_next, p_pred_next = step
    e = jnp.linalg.solve(p_pred_next, a_next @ p_t).T  # E_t = P_t A_{t+1}ᵀ (P⁻_{t+1})⁻¹
    s = m_t + e @ (s_next - m_pred_next)  # s_t = m_t + E_t (s_{t+1} − m⁻_{t+1})
    return s, s

  steps = (m[:-1], p[:-1], a[1:], m_pred[1:], p_pred[1:])
  _, s = lax.scan(smooth_step, m[-1], steps, reverse=True)  # from s_T = m_T down
  return jnp.concatenate([s, m[-1:]], axis=0)


def lm_smooth_reference(a: Array, b: Array, s0: Array, guess: Array, lam: Array | float) -> Array:
  """`lm_smooth` by a sequential Kalman filter and RTS smoother (``lax.scan``).

  The textbook recursions, one step at a time (O(T) depth), as the reference
  for the parallel version. Filter, from ``m_0 = s_0``, ``P_0 = 0``:

      m⁻_t = a_t m_{t-1} + b_t,      P⁻_t = a_t P_{t-1} a_tᵀ + I
      K_t = λ P⁻_t (I + λ P⁻_t)⁻¹     (= P⁻_t (P⁻_t + I/λ)⁻¹, without the 1/λ)
      m_t = m⁻_t + K_t (o_t − m⁻_t),  P_t = (I − K_t) P⁻_t

  then smoother, from ``s_T = m_T``:

      E_t = P_t a_{t+1}ᵀ (P⁻_{t+1})⁻¹,   s_t = m_t + E_t (s_{t+1} − m⁻_{t+1})

  Args:
    a: ``[T, B, S, S]``.
    b: ``[T, B, S]``.
    s0: ``[B, S]``.
    guess: ``[T, B, S]``.
    lam: scalar λ ≥ 0.

  Returns:
    ``s: [T, B, S]``, the same as `lm_smooth`.

  References:
    Särkkä (2013), "Bayesian Filtering and Smoothing", Cambridge University
    Press, sections 4.3 (Kalman filter) and 8.2 (Rauch–Tung–Striebel smoother).
  """
  return _reference(*_prepare(a, b, s0, guess, lam, "lm_smooth_reference"))


_reference = jax.jit(jax.vmap(_reference_one, in_axes=(1, 1, 0, 1, None), out_axes=1))

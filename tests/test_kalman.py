"""lm_smooth (ELK's step by a parallel Kalman smoother) against a dense solve of its
normal equations, the sequential reference, the plain recurrence at λ = 0, and the
guess at a large λ; under jit and in float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax._src.kalman import lm_smooth, lm_smooth_reference

T, B, S = 12, 2, 4
LAMS = [0.0, 1e-3, 1.0, 1e4]


def _problem(seed=0, t=T, dtype=np.float64):
  """Jacobians of spectral radius about 1.1 (mildly expansive), so the smoothing matters."""
  rng = np.random.default_rng(seed)
  a = 1.1 * rng.standard_normal((t, B, S, S)) / np.sqrt(S)
  b = rng.standard_normal((t, B, S))
  s0 = rng.standard_normal((B, S))
  guess = rng.standard_normal((t, B, S))
  return tuple(x.astype(dtype) for x in (a, b, s0, guess))


def _dense(a, b, s0, guess, lam):
  """The normal equations of Σ‖s_t − a_t s_{t-1} − b_t‖² + λ Σ‖s_t − o_t‖², block
  tridiagonal in t, assembled and solved densely per sequence in numpy float64."""
  t_len = a.shape[0]
  out = np.zeros(b.shape)
  for n in range(a.shape[1]):
    m = np.zeros((t_len * S, t_len * S))
    rhs = np.zeros(t_len * S)
    for t in range(t_len):
      blk = slice(t * S, (t + 1) * S)
      m[blk, blk] += (1 + lam) * np.eye(S)  # ‖s_t − …‖² and λ‖s_t − o_t‖²
      rhs[blk] += b[t, n] + lam * guess[t, n]
      if t == 0:
        rhs[blk] += a[0, n] @ s0[n]  # s_0 is fixed
      else:
        prev = slice((t - 1) * S, t * S)
        m[prev, prev] += a[t, n].T @ a[t, n]  # s_{t-1} in ‖s_t − a_t s_{t-1} − b_t‖²
        m[blk, prev] -= a[t, n]
        m[prev, blk] -= a[t, n].T
        rhs[prev] -= a[t, n].T @ b[t, n]
    out[:, n] = np.linalg.solve(m, rhs).reshape(t_len, S)
  return out


@pytest.mark.parametrize("lam", LAMS)
@pytest.mark.parametrize("t", [1, T])
def test_equals_dense_normal_equations(lam, t):
  a, b, s0, guess = _problem(t=t)
  got = lm_smooth(a, b, s0, guess, lam)
  assert got.shape == (t, B, S) and got.dtype == jnp.float64
  np.testing.assert_allclose(got, _dense(a, b, s0, guess, lam), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", LAMS)
def test_equals_sequential_reference(lam):
  a, b, s0, guess = _problem(seed=1)
  want = lm_smooth_reference(a, b, s0, guess, lam)
  np.testing.assert_allclose(lm_smooth(a, b, s0, guess, lam), want, rtol=1e-10, atol=1e-10)


def test_lam_zero_is_the_plain_recurrence():
  a, b, s0, guess = _problem(seed=2)
  s, want = s0, []
  for t in range(T):
    s = np.einsum("bij,bj->bi", a[t], s) + b[t]  # s_t = a_t s_{t-1} + b_t
    want.append(s)
  for fn in (lm_smooth, lm_smooth_reference):
    np.testing.assert_allclose(fn(a, b, s0, guess, 0.0), np.stack(want), rtol=1e-10, atol=1e-10)


def test_large_lam_stays_at_the_guess():
  """The step moves ‖residual‖/λ away from the guess: about 1e-8 at λ = 1e8."""
  a, b, s0, guess = _problem(seed=3)
  got = lm_smooth(a, b, s0, guess, 1e8)
  assert np.all(np.isfinite(got))
  np.testing.assert_allclose(got, guess, atol=1e-6)
  np.testing.assert_allclose(got, _dense(a, b, s0, guess, 1e8), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("lam", [0.0, 1e-3, 1.0, 1e4, 1e8])
def test_float32_under_jit(lam):
  """jit of the whole call with λ traced (one compilation for every λ). float32 eps is
  1.2e-7; over T = 12 mildly expansive steps with LU and Cholesky solves the error grows
  to a few hundred eps, hence 1e-4 (and no NaN at λ = 0 or 1e8)."""
  a, b, s0, guess = _problem(seed=5, dtype=np.float32)
  got = _jitted(a, b, s0, guess, jnp.asarray(lam, jnp.float32))
  assert got.dtype == jnp.float32
  want = _dense(*(x.astype(np.float64) for x in (a, b, s0, guess)), lam)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


_jitted = jax.jit(lm_smooth)


def test_shape_errors_name_the_shapes():
  a, b, s0, guess = _problem()
  with pytest.raises(
    ValueError, match=r"lm_smooth: s0 has shape \(4,\) but a.shape=\(12, 2, 4, 4\)"
  ):
    lm_smooth(a, b, s0[0], guess, 1.0)
  with pytest.raises(ValueError, match=r"lm_smooth: a must be \[T, B, S, S\]"):
    lm_smooth(a[0], b, s0, guess, 1.0)
  with pytest.raises(ValueError, match=r"lam must be a scalar, got lam.shape=\(2,\)"):
    lm_smooth(a, b, s0, guess, jnp.ones(2))


def test_several_blocks_equal_the_dense_solve():
  """T = 37 crosses the blocked scan's block boundaries (16) and pads the last."""
  a, b, s0, guess = _problem(seed=4, t=37)
  for lam in (0.0, 1.0):
    np.testing.assert_allclose(
      lm_smooth(a, b, s0, guess, lam), _dense(a, b, s0, guess, lam), rtol=1e-10, atol=1e-10
    )

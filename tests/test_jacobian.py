"""The Jacobian tools against closed forms and the papers' checkable claims."""

import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import jacobian as jac
from rnnjax._src.jacobian import _cholesky_qr_rows  # a private helper under test
from tests.helpers import CELLS, f64


def _elman(H, act, W, I=3, seed=0):
  cell = rj.elman(H, act)
  p = f64(cell.init(jax.random.key(seed), I))
  return cell, p._replace(w_h=jnp.asarray(W, jnp.float64))


def _orthogonal(H, seed=0):
  q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(H, H)))
  return q


@pytest.mark.parametrize("name", [*sorted(CELLS), "elman-sigmoid", "elman-linear"])
def test_closed_form_equals_jacfwd(name):
  cell = CELLS[name](6) if name in CELLS else rj.elman(6, name.split("-")[1])
  p = f64(cell.init(jax.random.key(0), 3))
  p = p._replace(b=p.b + 0.3 * jax.random.normal(jax.random.key(4), p.b.shape))
  if getattr(p, "b_hn", None) is not None:
    p = p._replace(b_hn=0.3 * jax.random.normal(jax.random.key(5), p.b_hn.shape))
  xs = jax.random.normal(jax.random.key(1), (8, 3))
  carry = jax.tree.map(
    lambda c: 0.5 * jax.random.normal(jax.random.key(2), c.shape),
    cell.initial_carry((), jnp.float64),
  )
  closed = jac.step_jacobians(cell, p, xs, carry)
  auto = jac.step_jacobians(cell, p, xs, carry, method="jacfwd")
  chex.assert_shape(closed, (8, cell.state_size, cell.state_size))
  np.testing.assert_allclose(closed, auto, rtol=1e-12, atol=1e-12)


def test_elman_step_jacobian_is_diag_fprime_W():
  cell, p = _elman(5, "tanh", 0.7 * _orthogonal(5))
  xs = jax.random.normal(jax.random.key(1), (4, 3))
  Js = jac.step_jacobians(cell, p, xs)
  prevs, final = jac.trajectory(cell, p, xs)
  hs = np.concatenate([np.asarray(prevs[1:]), np.asarray(final)[None]])
  for t in range(4):
    np.testing.assert_allclose(Js[t], np.diag(1 - hs[t] ** 2) @ np.asarray(p.w_h).T, rtol=1e-12)


def test_tanh_products_bounded_by_norm_power():
  """‖W‖₂ = 0.9 and |tanh'| ≤ 1: ‖J_T ⋯ J_{T-k+1}‖₂ ≤ 0.9^k for every k."""
  H, T = 32, 120
  cell, p = _elman(H, "tanh", 0.9 * _orthogonal(H))
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  logp = jac.log_product_norms(jac.step_jacobians(cell, p, xs))
  k = np.arange(1, T + 1)
  assert np.all(np.asarray(logp) <= k * math.log(0.9) + 1e-10)
  # the lecture's bound per step holds too
  n = jac.norms(jac.step_jacobians(cell, p, xs))["spectral"]
  assert np.all(np.asarray(n) <= np.asarray(jac.lecture_bound(cell, p, xs)) + 1e-12)
  c = jac.pascanu_conditions(cell, p)
  assert c.sigma_max == pytest.approx(0.9) and c.vanishing_sufficient and not c.exploding_necessary


def test_sigmoid_products_decay_like_quarter_norm():
  """|σ'| ≤ 1/4: with ‖W‖₂ = 3 the products decay at least like (3/4)^k."""
  H, T = 32, 80
  cell, p = _elman(H, "sigmoid", 3.0 * _orthogonal(H))
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  logp = np.asarray(jac.log_product_norms(jac.step_jacobians(cell, p, xs)))
  assert np.all(logp <= np.arange(1, T + 1) * math.log(0.75) + 1e-10)
  c = jac.pascanu_conditions(cell, p)
  assert c.gamma == 0.25 and c.threshold == 4.0 and c.vanishing_sufficient


def test_pascanu_conditions_on_known_W():
  """σ_max below 1/γ is sufficient for vanishing, above it necessary for
  exploding, and within SIGMA_RTOL of it neither (orthogonal W in float32)."""
  q = _orthogonal(4)

  def conditions(act, W):
    cell, p = _elman(4, act, W)
    c = jac.pascanu_conditions(cell, p)
    return c.vanishing_sufficient, c.exploding_necessary

  assert conditions("tanh", 0.999 * q) == (True, False)
  assert conditions("tanh", 1.001 * q) == (False, True)
  assert conditions("sigmoid", 3.99 * q) == (True, False)  # 1/γ = 4
  assert conditions("sigmoid", 4.01 * q) == (False, True)
  # a relative slack of 1e-7 is within SIGMA_RTOL on either side of 1/γ
  assert jac.SIGMA_RTOL > 1e-7
  assert conditions("tanh", (1 - 1e-7) * q) == (False, False)
  assert conditions("tanh", (1 + 1e-7) * q) == (False, False)
  # orthogonal in float32: σ_max is 1 + a rounding error, which is still 1
  cell = rj.elman(4)
  p = cell.init(jax.random.key(0), 3)._replace(w_h=jnp.asarray(q, jnp.float32))
  c = jac.pascanu_conditions(cell, p)
  assert c.sigma_max != 1.0 and c.sigma_max == pytest.approx(1.0, rel=jac.SIGMA_RTOL)
  assert (c.vanishing_sufficient, c.exploding_necessary) == (False, False)


def test_tools_on_a_cell_without_a_declared_activation():
  """The tools read the declaration, not the name: an elman cell stripped of its
  activation gets no bound and no conditions, only the measured norms."""
  cell, p = _elman(4, "tanh", 0.5 * _orthogonal(4))
  bare = cell._replace(activation=None)
  xs = jax.random.normal(jax.random.key(1), (6, 3))
  with pytest.raises(
    ValueError, match=r"lecture_bound: .* declares no activation \(cell.activation is None"
  ):
    jac.lecture_bound(bare, p, xs)
  with pytest.raises(ValueError, match=r"pascanu_conditions: .* declares no activation"):
    jac.pascanu_conditions(bare, p)
  r = jac.diagnose(bare, p, xs)
  assert "pascanu" not in r and "lecture_bound" not in r
  spectral = np.asarray(jac.norms(jac.step_jacobians(bare, p, xs))["spectral"])
  assert r["evidence"]["max_step_spectral_norm"] == pytest.approx(spectral.max(), rel=1e-12)
  assert spectral.max() < 1.0 and r["evidence"]["measured_vanishing_sufficient"] is True
  # the same cell with its activation declared gets both
  assert {"pascanu", "lecture_bound"} <= set(jac.diagnose(cell, p, xs))


def test_linear_orthogonal_rnn_is_an_isometry():
  """A linear RNN with orthogonal W: every singular value of a 200-step product
  is 1 and every Lyapunov exponent is 0."""
  H, T = 16, 200
  cell, p = _elman(H, "linear", _orthogonal(H, 3))
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  Js = jac.step_jacobians(cell, p, xs)
  np.testing.assert_allclose(np.exp(jac.log_singular_values(Js)), 1.0, atol=1e-10)
  np.testing.assert_allclose(jac.lyapunov_spectrum(cell, p, xs), 0.0, atol=1e-10)
  iso = jac.isometry(jac.log_singular_values(Js))
  assert float(iso["mean_sq"]) == pytest.approx(1.0, abs=1e-9)
  assert float(iso["var_sq"]) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_products_free_probability():
  """L Gaussian N(0, 1/N) matrices: mean squared singular value ≈ 1, variance ≈ L."""
  N = 200
  rng = np.random.default_rng(0)
  for L in (2, 4):
    means, variances = [], []
    for _ in range(4):
      Js = jnp.asarray(rng.normal(size=(L, N, N)) / math.sqrt(N))
      m = jac.isometry(jac.log_singular_values(Js))
      means.append(float(m["mean_sq"]))
      variances.append(float(m["var_sq"]))
    assert np.mean(means) == pytest.approx(1.0, rel=0.05)
    assert np.mean(variances) == pytest.approx(L, rel=0.15)


def _gain_rnn(N, g, seed=0):
  """h_t = tanh(W h_{t-1}), W_ij ~ N(0, g²/N): an elman cell with zero input weights."""
  cell = rj.elman(N, recurrent_init=rj.init.gaussian(g))
  p = f64(cell.init(jax.random.key(seed), 1))
  return cell, p._replace(w_x=jnp.zeros_like(p.w_x))


def test_lyapunov_below_the_transition_is_log_spectral_radius():
  N, g = 200, 0.7
  cell, p = _gain_rnn(N, g)
  rho = np.max(np.abs(np.linalg.eigvals(np.asarray(p.w_h))))
  xs = jnp.zeros((1500, 1))
  lam = jac.lyapunov_spectrum(cell, p, xs, k=1, transient=100)
  assert float(lam[0]) == pytest.approx(math.log(rho), abs=0.02)
  assert abs(math.log(rho) - math.log(g)) < 0.1  # ≈ ln g at large N


def test_lyapunov_chaos_above_the_transition_and_perturbation_check():
  N, g = 200, 2.5
  cell, p = _gain_rnn(N, g, seed=1)
  h0 = jax.random.normal(jax.random.key(3), (N,))
  xs = jnp.zeros((1500, 1))
  lam = jac.lyapunov_spectrum(cell, p, xs, h0, k=3, transient=300)
  assert float(lam[0]) > 0.1  # chaos
  assert np.all(np.diff(np.asarray(lam)) <= 0)  # sorted, descending
  direct = jac.max_lyapunov_perturbation(cell, p, xs, h0, transient=300)
  assert float(direct) == pytest.approx(float(lam[0]), abs=0.03)


def test_gradient_norms_vs_lag_equal_explicit_products():
  H, T = 8, 30
  cell, p = _elman(H, "tanh", 1.1 * _orthogonal(H))
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  g = np.asarray(jac.gradient_norms_vs_lag(cell, p, xs))
  Js = np.asarray(jac.step_jacobians(cell, p, xs))
  v = np.ones(H) / math.sqrt(H)
  assert g[T] == pytest.approx(1.0)
  for k in (0, 7, 29):
    P = np.eye(H)
    for t in range(T - 1, k - 1, -1):
      P = P @ Js[t]  # J_T ⋯ J_{k+1}
    assert g[k] == pytest.approx(np.linalg.norm(v @ P), rel=1e-10)


def test_power_iteration_product_norm_matches_explicit():
  cell = rj.lstm(12)
  p = f64(cell.init(jax.random.key(0), 3))
  xs = jax.random.normal(jax.random.key(1), (25, 3))
  logp = jac.log_product_norms(jac.step_jacobians(cell, p, xs))
  for start in (0, 15):
    lag = 25 - start
    power = jac.product_norm_power(cell, p, xs, start=start, iters=200)
    assert float(power) == pytest.approx(float(logp[lag - 1]), abs=1e-6)


def test_gated_cells_keep_gradients_alive_at_lag_100():
  """At initialisation on the same inputs, LSTM (forget bias 1) and GRU keep
  ‖∂L_T/∂h_k‖ orders of magnitude above the vanilla tanh RNN at lag 100."""
  H, I, T = 64, 8, 101
  xs = jax.random.normal(jax.random.key(7), (T, I))
  out = {}
  for name, cell in [("elman", rj.elman(H)), ("lstm", rj.lstm(H)), ("gru", rj.gru(H))]:
    p = f64(cell.init(jax.random.key(0), I))
    out[name] = float(jac.gradient_norms_vs_lag(cell, p, xs)[T - 100])
  assert out["lstm"] > 100 * out["elman"]
  assert out["gru"] > 100 * out["elman"]


def test_diagnose_verdicts():
  T = 120
  xs = jax.random.normal(jax.random.key(1), (T, 3))
  cell, p = _elman(16, "tanh", 0.5 * _orthogonal(16))
  r = jac.diagnose(cell, p, xs)
  assert r["verdict"] == "vanishing" and r["evidence"]["log_product_norm_per_step"] < -0.5
  assert len(r["grad_norm_by_lag"]) == T + 1 and r["pascanu"]["vanishing_sufficient"]
  cell, p = _gain_rnn(64, 3.0)
  r = jac.diagnose(cell, p, jnp.zeros((T, 1)), 0.5 * jnp.ones(64))
  assert r["verdict"] == "exploding" and r["evidence"]["lyapunov_max"] > 0.1
  assert r["evidence"]["max_step_spectral_norm"] > 1.0
  assert r["evidence"]["measured_vanishing_sufficient"] is False
  cell, p = _elman(16, "linear", _orthogonal(16))
  assert jac.diagnose(cell, p, xs)["verdict"] == "stable"


def test_bad_input():
  cell = rj.elman(4)
  p = cell.init(jax.random.key(0), 3)
  xs = jnp.zeros((10, 3))
  with pytest.raises(ValueError, match=r"k must lie in \[1, S=4\] \(the state size\), got 5"):
    jac.lyapunov_spectrum(cell, p, xs, k=5)
  with pytest.raises(
    ValueError, match=r"T=10 steps leave nothing after discarding a transient of 10"
  ):
    jac.lyapunov_spectrum(cell, p, xs, transient=10)
  with pytest.raises(ValueError, match=r"xs must be one sequence \[T, I\], got shape \(10, 2, 3\)"):
    jac.step_jacobians(cell, p, jnp.zeros((10, 2, 3)))
  with pytest.raises(ValueError, match=r"the lecture's bound .* is for the vanilla RNN"):
    jac.lecture_bound(rj.lstm(4), rj.lstm(4).init(jax.random.key(0), 3), xs)
  with pytest.raises(ValueError, match=r"window must lie in \[1, T=10\], got 11"):
    jac.window_spectra(jnp.zeros((10, 4, 4)), 11)


def _custom_tanh(H=4):
  def init(key, i):
    k1, k2 = jax.random.split(key)
    return {"w": jax.random.normal(k1, (i, H)), "u": 0.5 * jax.random.normal(k2, (H, H))}

  def step(p, c, x):
    h = jnp.tanh(x @ p["w"] + c @ p["u"])
    return h, h

  return rj.custom_cell(init, step, lambda s=(), d=jnp.float32: jnp.zeros((*s, H), d))


@pytest.mark.parametrize(
  "tool",
  [jac.trajectory, jac.step_jacobians, jac.lyapunov_spectrum, jac.gradient_norms_vs_lag],
  ids=lambda f: f.__name__,
)
def test_custom_cell_bad_input_is_a_clear_error(tool):
  """Issue 20: a custom cell with the wrong input size or a batched carry ended in an
  internal dot_general TypeError, and integer xs were accepted (rj.scan refuses them)."""
  cell = _custom_tanh()
  p = cell.init(jax.random.key(0), 3)
  name = tool.__name__
  with pytest.raises(
    ValueError,
    match=name + r": params do not fit .* with input_size 2: leaf \['w'\] of the given dict has "
    r"shape \(3, 4\), but the cell's dict needs \(2, 4\); pass params from cell.init\(key, 2\)",
  ):
    tool(cell, p, jnp.zeros((5, 2)))
  with pytest.raises(
    ValueError,
    match=name + r": carry leaf has shape \(2, 4\) but one unbatched sequence .* needs \(4,\); "
    r".* pass carry\[b\]",
  ):
    tool(cell, p, jnp.zeros((5, 3)), jnp.zeros((2, 4)))
  with pytest.raises(TypeError, match=name + r": xs must be floating point, got dtype int"):
    tool(cell, p, jnp.zeros((5, 3), jnp.int32))


def test_lecture_bound_names_what_it_checks_not_gated():
  """Issue 20: an orthogonal (skew-symmetric) RNN was called "a gated cell"."""
  cell = rj.orthogonal_rnn(4)
  p = cell.init(jax.random.key(0), 3)
  with pytest.raises(ValueError, match=r"declares no activation") as e:
    jac.lecture_bound(cell, p, jnp.zeros((5, 3)))
  assert "(a gated cell)" not in str(e.value) and "antisymmetric" in str(e.value)


def test_jacobian_cli_writes_report_and_plots(tmp_path, capsys):
  from rnnjax.apps import cli

  out = tmp_path / "jac"
  args = ["--cell", "elman", "--init", "gaussian", "--gain", "0.5", "--hidden", "16"]
  assert cli.main(["jacobian", *args, "--T", "40", "--out", str(out)]) == 0
  report = json.loads((out / "report.json").read_text())
  assert report["verdict"] == "vanishing" and len(report["step_spectral_norm"]) == 40
  # the report's conditions are those of the command's cell and params (seed 0, I = 8)
  cell = rj.make_cell("elman", 16, recurrent_init=rj.init.gaussian(0.5))
  params = cell.init(jax.random.split(jax.random.key(0))[0], 8)
  expected = jac.pascanu_conditions(cell, params)
  assert expected.sigma_max < 1.0  # this draw has σ_max ≈ 0.96: vanishing is guaranteed
  assert report["pascanu"] == expected._asdict()
  assert report["pascanu"]["vanishing_sufficient"] is True
  assert report["pascanu"]["exploding_necessary"] is False
  for png in ("step_norms.png", "products_by_lag.png"):
    assert (out / png).read_bytes()[:4] == b"\x89PNG"
  printed = capsys.readouterr().out
  assert "verdict vanishing" in printed and "vanishing guaranteed" in printed


def test_lyapunov_qr_every_m_steps_agrees():
  """Re-orthonormalising every m steps gives the same exponents (Benettin et al.)."""
  cell, p = _gain_rnn(64, 2.0, seed=2)
  h0 = jax.random.normal(jax.random.key(3), (64,))
  xs = jnp.zeros((800, 1))
  every = jac.lyapunov_spectrum(cell, p, xs, h0, k=8, transient=200)
  blocks = jac.lyapunov_spectrum(cell, p, xs, h0, k=8, transient=200, qr_every=4)
  np.testing.assert_allclose(blocks, every, atol=1e-9)
  cell, p = _elman(16, "linear", _orthogonal(16))
  np.testing.assert_allclose(
    jac.lyapunov_spectrum(cell, p, xs[:, :1].repeat(3, 1), qr_every=7), 0.0, atol=1e-10
  )
  with pytest.raises(ValueError, match=r"qr_every must be a positive int, got 0"):
    jac.lyapunov_spectrum(cell, p, xs[:, :1].repeat(3, 1), qr_every=0)


def test_gradient_norms_do_not_underflow_before_the_gradient_does():
  """In float32 the squares of entries below 1e-19 flush to zero; the norm is taken
  as m‖g/m‖, so it stays nonzero (and correct) while any entry is nonzero."""
  cell = rj.elman(16)
  p = cell.init(jax.random.key(0), 3)
  W = jnp.asarray(0.3 * _orthogonal(16), jnp.float32)  # fast decay: 0.3^k
  p = p._replace(w_h=W)
  xs = jax.random.normal(jax.random.key(1), (60, 3))
  g32 = np.asarray(jac.gradient_norms_vs_lag(cell, p, xs))
  g64 = np.asarray(jac.gradient_norms_vs_lag(cell, f64(p), xs.astype(jnp.float64)))
  tiny = (g64 < 1e-20) & (g64 > 1e-35)  # squares underflow float32 here
  assert tiny.sum() >= 5
  np.testing.assert_allclose(g32[tiny], g64[tiny], rtol=1e-3)


def test_a_cell_without_a_closed_form_jacobian_gets_the_measured_one():
  """state_jacobian=None: the tools fall back to jax.jacfwd of the step."""
  cell = rj.lstm(3)
  p = f64(cell.init(jax.random.key(0), 2))
  xs = jax.random.normal(jax.random.key(1), (12, 2), jnp.float64)
  measured = cell._replace(state_jacobian=None)
  np.testing.assert_allclose(
    jac.step_jacobians(measured, p, xs), jac.step_jacobians(cell, p, xs), rtol=1e-12, atol=1e-14
  )
  np.testing.assert_allclose(
    jac.lyapunov_spectrum(measured, p, xs, transient=2),
    jac.lyapunov_spectrum(cell, p, xs, transient=2),
    rtol=1e-10,
  )


def _spread(S, cond, seed=0):
  """An [S, S] matrix with singular values spread from 1 to 1/cond."""
  rng = np.random.default_rng(seed)
  U = np.linalg.qr(rng.normal(size=(S, S)))[0]
  V = np.linalg.qr(rng.normal(size=(S, S)))[0]
  return U @ np.diag(np.logspace(0, -math.log10(cond), S)) @ V.T


def test_cholesky_qr_step_and_its_certificate():
  """One Cholesky QR step: on a well-conditioned Z it is a QR factorisation with
  Householder's diagonal; where κ(Z) ≳ u^{-1/2} the certificate fails."""
  Z = _spread(12, 1e3)
  Qt, logd, ok = _cholesky_qr_rows(jnp.asarray(Z.T))
  R = np.linalg.qr(Z, mode="r")
  assert bool(ok)
  np.testing.assert_allclose(Qt @ Qt.T, np.eye(12), atol=1e-10)
  R_hat = np.asarray(Qt) @ Z  # Q̂ᵀZ = R̂: upper triangular, diagonal exp(logd)
  np.testing.assert_allclose(np.tril(R_hat, -1), 0.0, atol=1e-12)
  np.testing.assert_allclose(np.diag(R_hat), np.exp(logd), rtol=1e-10)
  np.testing.assert_allclose(logd, np.log(np.abs(np.diag(R))), atol=1e-10)
  for cond in (1e9, 1e12):  # the Gram matrix is (numerically) singular: lost or NaN
    assert not bool(_cholesky_qr_rows(jnp.asarray(_spread(12, cond).T))[2])


def test_lyapunov_cholesky_equals_householder():
  """The Cholesky route (one certified pass per step, Householder at the ends of
  the counted steps) gives the Householder exponents to 1e-8 in float64: every
  step, and k < S in blocks after a transient; with J·Q matrix-free (elman), with
  the [S, S] Jacobian (the same elman without its declared activation, and an
  LSTM)."""
  N, T = 16, 300
  cell, p = _gain_rnn(N, 2.0, seed=4)
  h0 = jax.random.normal(jax.random.key(3), (N,))
  xs = jnp.zeros((T, 1))
  for kw in ({"k": 5, "qr_every": 3, "transient": 31}, {}):
    ref = jac.lyapunov_spectrum(cell, p, xs, h0, qr="householder", **kw)
    fast = jac.lyapunov_spectrum(cell, p, xs, h0, qr="cholesky", **kw)
    np.testing.assert_allclose(fast, ref, rtol=0, atol=1e-8)
  assert float(ref[0]) > 0.01  # chaotic, and κ(J_t) ≈ 500 (median): the Cholesky steps pass
  # the default in float64 is the Cholesky route; the [S, S] Jacobian agrees with diag(f') W
  np.testing.assert_array_equal(jac.lyapunov_spectrum(cell, p, xs, h0), fast)
  bare = jac.lyapunov_spectrum(cell._replace(activation=None), p, xs, h0, qr="cholesky")
  np.testing.assert_allclose(bare, fast, rtol=0, atol=1e-10)
  lstm = rj.lstm(6)
  pl = f64(lstm.init(jax.random.key(0), 3))
  xl = jax.random.normal(jax.random.key(1), (200, 3))
  np.testing.assert_allclose(
    jac.lyapunov_spectrum(lstm, pl, xl, transient=20, qr="cholesky"),
    jac.lyapunov_spectrum(lstm, pl, xl, transient=20, qr="householder"),
    rtol=0,
    atol=1e-8,
  )


def test_lyapunov_cholesky_falls_back_to_householder_when_ill_conditioned():
  """κ(J_t) = 1e10 > u^{-1/2}: the Gram matrix is numerically singular at every
  step, every step is redone by Householder, and the exponents are the known
  ones: log σ_i for a linear RNN with W = diag(σ), σ spanning 1 to 1e-10, once
  a transient has aligned the basis with the axes (to (σ_{i+1}/σ_i)^10 = 1e-20)."""
  S = 6
  sigma = np.logspace(0, -10, S)
  cell, p = _elman(S, "linear", np.diag(sigma))
  xs = jnp.zeros((40, 3))
  lam = jac.lyapunov_spectrum(cell, p, xs, transient=10, qr="cholesky")
  np.testing.assert_allclose(lam, np.log(sigma), rtol=0, atol=1e-8)
  np.testing.assert_allclose(
    lam, jac.lyapunov_spectrum(cell, p, xs, transient=10, qr="householder"), rtol=0, atol=1e-8
  )


def test_lyapunov_auto_is_householder_in_float32():
  cell = rj.elman(8, recurrent_init=rj.init.gaussian(1.5))
  p = cell.init(jax.random.key(0), 3)
  xs = jax.random.normal(jax.random.key(1), (50, 3), jnp.float32)
  np.testing.assert_array_equal(
    jac.lyapunov_spectrum(cell, p, xs), jac.lyapunov_spectrum(cell, p, xs, qr="householder")
  )
  with pytest.raises(
    ValueError,
    match=r"lyapunov_spectrum: unknown qr 'lu'; expected one of "
    r"\['auto', 'cholesky', 'householder'\]",
  ):
    jac.lyapunov_spectrum(cell, p, xs, qr="lu")


def test_norms_equal_numpy():
  Js = np.random.default_rng(0).normal(size=(5, 7, 7))
  n = jac.norms(jnp.asarray(Js))
  np.testing.assert_allclose(n["spectral"], np.linalg.norm(Js, 2, axis=(-2, -1)), rtol=1e-12)
  np.testing.assert_allclose(n["frobenius"], np.linalg.norm(Js, "fro", axis=(-2, -1)), rtol=1e-12)
  one = jac.norms(jnp.asarray(Js[0]))  # a single [S, S] matrix
  assert float(one["spectral"]) == pytest.approx(np.linalg.norm(Js[0], 2), rel=1e-12)


# ----------------------------------------------------------------- parallel outlook


def _driven_tanh(H, g, T, seed=0):
  """A tanh RNN with ``W ~ N(0, g²/H)`` driven by N(0, 1) inputs (the issue's setting)."""
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(g))
  p = cell.init(jax.random.key(seed), H)
  xs = jax.random.normal(jax.random.key(1000 + seed), (T, H), jnp.float32)
  return cell, p, xs


def _deer_iterations(cell, p, xs):
  T = xs.shape[0]
  _, _, info = rj.parallel_scan(cell, p, xs[:, None], max_iters=T, fallback="none")
  return int(info.iterations), bool(info.converged)


def test_outlook_predicts_contracting_deer_within_2x():
  cell, p, xs = _driven_tanh(8, 0.5, 100)
  out = jac.parallel_outlook(cell, p, xs)
  its, converged = _deer_iterations(cell, p, xs)
  assert converged
  assert out["iterations"] / 2 <= its <= 2 * out["iterations"], (out, its)
  lo, hi = out["range"]
  assert lo <= its <= hi
  assert out["pays_off"] and out["prediction"] == "fast"
  assert out["lyapunov_max"] < -0.5 and out["T"] == 100 and out["tol"] == 1e-5
  json.dumps(out)  # JSON-ready


def test_outlook_says_driven_g3_does_not_pay_off():
  """The issue's case: a driven g = 3 tanh RNN whose λ₁ hovers near 0 (−0.064 in the
  issue's draw) while DEER needs about T iterations; the sign of λ₁ said "fast"."""
  cell, p, xs = _driven_tanh(16, 3.0, 200)
  out = jac.parallel_outlook(cell, p, xs)
  assert not out["pays_off"] and out["prediction"] in ("slow", "no")
  assert out["iterations"] > 200 / 10
  its, converged = _deer_iterations(cell, p, xs)
  assert not converged or its > 200 / 10  # the measurement agrees: it does not pay off


def test_outlook_sees_what_a_negative_lyapunov_exponent_hides():
  """An undriven g = 3 tanh RNN from a random carry: λ₁ < 0 along its trajectory, yet
  DEER needs 66 iterations at T = 100 (benchmarks/results/parallel_outlook_cpu.md, the
  same draw), because its linearisation between zeros and the trajectory expands."""
  H, T = 16, 100
  cell = rj.elman(H, input_init=rj.init.gaussian(1.0), recurrent_init=rj.init.gaussian(1.0))
  p = cell.init(jax.random.key(0), H)
  p = p._replace(w_h=3.0 * p.w_h)
  carry = jax.random.normal(jax.random.key(5), (H,), jnp.float32)
  out = jac.parallel_outlook(cell, p, jnp.zeros((T, H), jnp.float32), carry)
  assert out["lyapunov_max"] < 0 and out["halfway_growth"] > 0.1
  assert not out["pays_off"] and out["prediction"] == "slow"
  assert 66 / 2 <= out["iterations"] <= 2 * 66


def test_outlook_closed_form_on_a_linear_expanding_cell():
  """``h_t = 1.5 h_{t-1}``: every step grows perturbations by 1.5, so the largest
  window growth is ``T log 1.5``, the halfway growth ``log 1.5``, and λ₁ > 0."""
  T = 30
  cell = rj.elman(3, "linear", recurrent_init=rj.init.identity(1.5))
  p = f64(cell.init(jax.random.key(0), 2))
  out = jac.parallel_outlook(cell, p, jnp.zeros((T, 2)), jnp.ones(3))
  np.testing.assert_allclose(out["window_growth"], T * math.log(1.5), rtol=1e-9)
  np.testing.assert_allclose(out["halfway_growth"], math.log(1.5), rtol=1e-9)
  np.testing.assert_allclose(out["lyapunov_max"], math.log(1.5), rtol=1e-9)
  assert out["prediction"] == "no" and out["iterations"] == T and not out["pays_off"]
  assert out["tol"] == 1e-10  # float64: parallel_scan's own default


def test_max_window_equals_brute_force():
  from rnnjax._src.jacobian import _max_window  # a private helper under test

  rng = np.random.default_rng(0)
  for g in (rng.normal(size=40), -np.abs(rng.normal(size=9)), rng.normal(size=1)):
    want = max([0.0] + [g[i:j].sum() for i in range(len(g)) for j in range(i + 1, len(g) + 1)])
    np.testing.assert_allclose(_max_window(g), want, rtol=1e-12, atol=1e-12)


def test_outlook_batch_reports_the_worst_sequence():
  cell = rj.elman(4, recurrent_init=rj.init.gaussian(0.5))
  p = f64(cell.init(jax.random.key(0), 2))
  xs = jax.random.normal(jax.random.key(1), (40, 3, 2))
  out = jac.parallel_outlook(cell, p, xs)
  each = [jac.parallel_outlook(cell, p, xs[:, b]) for b in range(3)]
  assert out["batch"] == 3 and out["iterations"] == max(e["iterations"] for e in each)


def test_diagnose_reports_the_outlook():
  cell, p, xs = _driven_tanh(8, 0.5, 60)
  r = jac.diagnose(cell, p, xs)["parallel_evaluation"]
  assert {"iterations", "range", "pays_off", "lyapunov_max", "why"} <= set(r)
  assert r["prediction"] == "fast" and r["pays_off"]


def test_outlook_bad_input():
  cell = rj.elman(4)
  p = cell.init(jax.random.key(0), 3)
  xs = jnp.zeros((10, 3))
  with pytest.raises(ValueError, match=r"method 'quasi' is not predicted.*method='deer'"):
    jac.parallel_outlook(cell, p, xs, method="quasi")
  with pytest.raises(ValueError, match=r"unknown method 'newton'; expected one of \['deer'\]"):
    jac.parallel_outlook(cell, p, xs, method="newton")
  with pytest.raises(ValueError, match=r"tol must be a positive number, got 0"):
    jac.parallel_outlook(cell, p, xs, tol=0)
  with pytest.raises(ValueError, match=r"xs must be one sequence \[T, I\] or a batch \[T, B, I\]"):
    jac.parallel_outlook(cell, p, jnp.zeros((10,)))
  with pytest.raises(ValueError, match=r"lyapunov_transient must be an int in \[0, T=10\)"):
    jac.parallel_outlook(cell, p, xs, lyapunov_transient=10)
  with pytest.raises(ValueError, match=r"xs has feature size 5 but params expect input_size 3"):
    jac.parallel_outlook(cell, p, jnp.zeros((10, 5)))
  with pytest.raises(TypeError, match=r"cell must be an rnnjax Cell"):
    jac.parallel_outlook("elman", p, xs)


def test_parallel_prediction_is_deprecated():
  with pytest.warns(DeprecationWarning, match="use rnnjax.jacobian.parallel_outlook"):
    assert jac.parallel_prediction(-0.5)["prediction"] == "fast"

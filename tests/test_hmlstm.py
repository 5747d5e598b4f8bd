"""The HM-LSTM against the paper's equations, written out independently in NumPy:
the three operations, the straight-through boundary, and gradients through rj.scan."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax._src.cells.hmlstm import layer_step
from tests.helpers import assert_trees_close, f64

SIZES, I, B = (4, 3), 2, 5


def _sig(x):
  return 1 / (1 + np.exp(-x))


def _paper_layer(p, h_prev, c_prev, z_prev, h_above, h_below, z_below, a):
  """Equations (2)-(3) and the boundary, row by row with explicit cases (NumPy)."""
  p = jax.tree.map(np.asarray, p)
  H = h_prev.shape[-1]
  hs, cs, zs = [], [], []
  for r in range(h_prev.shape[0]):
    s = h_prev[r] @ p.w_rec + p.b + z_below[r, 0] * (h_below[r] @ p.w_below)
    if h_above is not None:
      s = s + z_prev[r, 0] * (h_above[r] @ p.w_above)
    i, f, g, o = _sig(s[:H]), _sig(s[H : 2 * H]), np.tanh(s[2 * H : 3 * H]), _sig(s[3 * H : 4 * H])
    if z_prev[r, 0] == 1:  # FLUSH
      c = i * g
      h = o * np.tanh(c)
    elif z_below[r, 0] == 1:  # UPDATE
      c = f * c_prev[r] + i * g
      h = o * np.tanh(c)
    else:  # COPY
      c, h = c_prev[r], h_prev[r]
    hs.append(h)
    cs.append(c)
    if h_above is not None:
      copy = z_prev[r, 0] == 0 and z_below[r, 0] == 0
      zs.append([0.0 if copy else float(np.clip((a * s[4 * H] + 1) / 2, 0, 1) >= 0.5)])
  return np.array(hs), np.array(cs), (np.array(zs) if zs else None)


def _setup():
  cell = rj.hmlstm(SIZES)
  params = f64(cell.init(jax.random.key(0), I))
  params = rj.set_slope(params, 2.5)
  return cell, params


def _rand(key, shape, scale=1.0):
  return scale * jax.random.normal(jax.random.key(key), shape, jnp.float64)


def test_layer_step_is_the_papers_equations_with_forced_boundaries():
  _, params = _setup()
  p = params.layers[0]  # the bottom layer, with a boundary detector and a layer above
  H = SIZES[0]
  h_prev, c_prev = _rand(1, (B, H)), _rand(2, (B, H))
  h_above, x = _rand(3, (B, SIZES[1])), _rand(4, (B, I))
  rng = np.random.default_rng(0)
  for _ in range(3):  # random forced boundaries: every row its own operation
    z_prev = jnp.asarray(rng.integers(0, 2, (B, 1)), jnp.float64)
    z_below = jnp.asarray(rng.integers(0, 2, (B, 1)), jnp.float64)
    got = layer_step(p, h_prev, c_prev, z_prev, h_above, x @ p.w_below, z_below, params.slope)
    want = _paper_layer(p, h_prev, c_prev, z_prev, h_above, x, z_below, 2.5)
    for g, w in zip(got, want, strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_the_three_operations_give_the_exact_jacobian_structure():
  _, params = _setup()
  p = params.layers[0]
  H = SIZES[0]
  h_prev, c_prev = _rand(1, (1, H)), _rand(2, (1, H))
  h_above, x = _rand(3, (1, SIZES[1])), _rand(4, (1, I))
  one, zero = jnp.ones((1, 1)), jnp.zeros((1, 1))

  def jac(z_prev, z_below):
    def f(h, c):
      out = layer_step(p, h[None], c[None], z_prev, h_above, x @ p.w_below, z_below, params.slope)
      return out[0][0], out[1][0]

    return jax.jacfwd(f, argnums=(0, 1))(h_prev[0], c_prev[0])

  (_, _), (_, dc_dc) = jac(one, one)  # FLUSH
  np.testing.assert_array_equal(dc_dc, 0.0)
  (dh_dh, dh_dc), (dc_dh, dc_dc) = jac(zero, zero)  # COPY
  np.testing.assert_array_equal(dh_dh, np.eye(H))
  np.testing.assert_array_equal(dc_dc, np.eye(H))
  np.testing.assert_array_equal(dh_dc, 0.0)
  np.testing.assert_array_equal(dc_dh, 0.0)
  # UPDATE is an LSTM step with the first 4H columns of the same weights
  h, c, _ = layer_step(p, h_prev, c_prev, zero, h_above, x @ p.w_below, one, params.slope)
  lstm = rj.LSTMParams(p.w_below[:, : 4 * H], p.w_rec[:, : 4 * H], p.b[: 4 * H])
  ref, _ = rj.lstm(H).step(lstm, rj.LSTMCarry(h_prev, c_prev), x)
  np.testing.assert_allclose(h, ref.h, rtol=1e-13)
  np.testing.assert_allclose(c, ref.c, rtol=1e-13)


def test_the_straight_through_gradient_is_a_over_2_inside_the_band():
  a = 2.5
  s = jnp.array([-0.5, -0.39, -0.1, 0.0, 0.2, 0.39, 0.41, 3.0])  # band |s| < 1/a = 0.4
  z = rj._src.cells.hmlstm.boundary(s, a)
  np.testing.assert_array_equal(z, [0, 0, 0, 1, 1, 1, 1, 1])  # round(hard_sigm(a s))
  grads = jax.vmap(jax.grad(rj._src.cells.hmlstm.boundary), (0, None))(s, a)
  np.testing.assert_allclose(grads, [0, a / 2, a / 2, a / 2, a / 2, a / 2, 0, 0])


def _paper_stack(params, carry, x, a):
  """The whole step, bottom to top, from `_paper_layer` (NumPy)."""
  hs, cs, zs = [], [], []
  h_below, z_below = np.asarray(x), np.ones((x.shape[0], 1))
  L = len(params.layers)
  for k, p in enumerate(params.layers):
    top = k == L - 1
    z_prev = np.zeros((x.shape[0], 1)) if top else np.asarray(carry.z[k])
    h_above = None if top else np.asarray(carry.h[k + 1])
    h, c, z = _paper_layer(
      p, np.asarray(carry.h[k]), np.asarray(carry.c[k]), z_prev, h_above, h_below, z_below, a
    )
    hs.append(h)
    cs.append(c)
    if z is not None:
      zs.append(z)
      z_below = z
    h_below = h
  return hs, cs, zs


def test_scan_equals_the_papers_stack_and_its_gradients_a_python_loop():
  cell, params = _setup()
  xs = _rand(5, (7, B, I), 2.0)
  # an initial state with mixed boundaries, so FLUSH, UPDATE and COPY all occur
  carry0 = rj.HMLSTMCarry(
    h=tuple(_rand(6 + k, (B, H), 0.5) for k, H in enumerate(SIZES)),
    c=tuple(_rand(8 + k, (B, H), 0.5) for k, H in enumerate(SIZES)),
    z=(jnp.array([[1.0], [0.0], [1.0], [0.0], [0.0]]),),
  )
  carry, ops = carry0, set()
  step = jax.jit(cell.step)
  for t in range(xs.shape[0]):
    hs, cs, zs = _paper_stack(params, carry, xs[t], 2.5)
    ops |= {(float(zp), float(zb)) for zp, zb in zip(carry.z[0][:, 0], zs[0][:, 0], strict=True)}
    new, _ = step(params, carry, xs[t])
    for g, w in zip((*new.h, *new.c, *new.z), (*hs, *cs, *zs), strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)
    carry = new
  # layer 1 FLUSHed and UPDATEd (z_{t-1} = 1, 0); layer 2 UPDATEd and COPYed (z_t^1 = 1, 0)
  assert {zp for zp, _ in ops} == {0.0, 1.0} and {zb for _, zb in ops} == {0.0, 1.0}, ops

  def loop_loss(p, x):
    c, total = carry0, 0.0
    for t in range(x.shape[0]):
      c, y = cell.step(p, c, x[t])
      total = total + jnp.sum(jnp.sin(y))
    return total + jnp.sum(c.c[1] ** 2)

  def scan_loss(p, x, mode):
    c, ys = rj.scan(cell, p, x, carry0, backward=mode)
    return jnp.sum(jnp.sin(ys)) + jnp.sum(c.c[1] ** 2)

  want = jax.jit(jax.grad(loop_loss, argnums=(0, 1)))(params, xs)
  for mode in ("bptt", "autodiff"):
    got = jax.jit(jax.grad(scan_loss, argnums=(0, 1)), static_argnums=2)(params, xs, mode)
    assert_trees_close(got, want, rtol=1e-10, atol=1e-12)
  assert float(jnp.max(jnp.abs(want[0].layers[0].w_rec[:, -1]))) > 0  # the estimator is live
  np.testing.assert_array_equal(want[0].slope, 0.0)  # the slope is set, never trained


def test_a_batch_that_copies_skips_the_layer_and_the_jacobian_tools_run():
  cell, params = _setup()
  carry = cell.initial_carry((B,), jnp.float64)
  # the bottom layer reads every step; its boundaries decide whether layer 2 reads
  jaxpr = jax.make_jaxpr(lambda c, x: cell.step(params, c, x))(carry, jnp.ones((B, I)))

  def names(jx):
    for e in jx.eqns:
      yield e.primitive.name
      for sub in jax.extend.core.jaxprs_in_params(e.params):
        yield from names(sub)

  assert "cond" in set(names(jaxpr.jaxpr))
  flush = carry._replace(z=(jnp.zeros((B, 1)),))
  p = params._replace(
    layers=(params.layers[0]._replace(b=params.layers[0].b.at[-1].set(-50.0)), params.layers[1])
  )
  new, _ = cell.step(p, flush, _rand(1, (B, I)))  # no boundary below: layer 2 copies
  np.testing.assert_array_equal(new.h[1], flush.h[1])
  np.testing.assert_array_equal(new.z[0], 0.0)
  S = 2 * sum(SIZES) + 1
  js = rj.jacobian.step_jacobians(cell, params, _rand(2, (6, I)))
  assert js.shape == (6, S, S) and bool(jnp.all(jnp.isfinite(js)))


def test_the_output_module_is_the_gated_sum():
  key = jax.random.key(3)
  out = f64(rj.init_hmlstm_output(key, SIZES, 6))
  ys = _rand(4, (B, sum(SIZES)))
  g = _sig(np.asarray(ys) @ np.asarray(out.w_gate))
  want = np.maximum(
    0,
    g[:, :1] * (np.asarray(ys[:, :4]) @ np.asarray(out.w_out[0]))
    + g[:, 1:] * (np.asarray(ys[:, 4:]) @ np.asarray(out.w_out[1])),
  )
  np.testing.assert_allclose(rj.hmlstm_output(out, ys), want, rtol=1e-12)


def test_hmlstm_errors():
  with pytest.raises(ValueError, match=r"at least two layers .* use rnnjax.lstm"):
    rj.hmlstm((8,))
  with pytest.raises(ValueError, match=r"hidden_sizes\[1\]"):
    rj.hmlstm((8, 0))
  with pytest.raises(ValueError, match=r"estimator"):
    rj.hmlstm((8, 4), estimator="reinforce")
  with pytest.raises(ValueError, match=r"a_max must be >= 1"):
    rj.slope_annealing(0.5)


def test_a_rows_gradient_does_not_depend_on_the_rest_of_its_batch():
  """Found in review: the evaluation-only COPY skip once dropped the straight-through
  gradient of a copying row whenever the whole batch copied. Row 0 copies at the top
  level (its level-1 boundary pre-activation is −0.5, inside the estimator's band);
  alone, its gradient must equal its gradient beside a row that reads."""
  cell, params = _setup()
  carry = cell.initial_carry((1,), jnp.float64)
  carry = carry._replace(h=(jnp.full((1, 4), 0.3), jnp.full((1, 3), -0.2)))
  carry = carry._replace(c=(jnp.full((1, 4), 0.5), jnp.full((1, 3), 0.4)))
  lp, H = params.layers[0], SIZES[0]
  s0 = (carry.h[0] @ lp.w_rec + lp.b[None])[0, 4 * H]
  w = lp.w_below[:, 4 * H]
  x_copy = ((-0.1 - s0) / jnp.dot(w, w) * w)[None]  # a·s = -0.25: z = 0, in the band
  x_read = ((+0.5 - s0) / jnp.dot(w, w) * w)[None]  # z = 1: the top level reads

  def row0(x, c):
    return jnp.sum(jnp.sin(cell.step(params, c, x)[1][0]))

  assert float(cell.step(params, carry, x_copy)[0].z[0][0, 0]) == 0.0
  grad = jax.jit(jax.grad(row0))
  alone = grad(x_copy, carry)
  pair = jax.tree.map(lambda a: jnp.concatenate([a, a]), carry)
  beside = grad(jnp.concatenate([x_copy, x_read]), pair)[:1]
  np.testing.assert_allclose(alone, beside, rtol=1e-12)
  assert float(jnp.max(jnp.abs(alone))) > 0


def test_the_stochastic_step_draws_the_boundary_and_returns_its_log_probability():
  """REINFORCE's forward (rj.hmlstm_stochastic_step) against the paper's stack in NumPy:
  with u = 0.5 the draw is the rounding, so it equals the deterministic step; with other u,
  z = [u < p] and logp = log P(z) with p = hard_sigm(a z̃), computed here independently."""
  cell, params = _setup()
  x, carry = _rand(1, (B, I)), cell.initial_carry((B,), jnp.float64)
  carry = carry._replace(z=(jnp.array([[1.0], [0.0], [0.0], [1.0], [0.0]]),))
  carry = carry._replace(h=tuple(_rand(k, (B, H), 0.5) for k, H in zip((2, 3), SIZES, strict=True)))
  half = jnp.full((B, 1), 0.5)
  want_carry, want_y = cell.step(params, carry, x)
  got_carry, got_y, _ = rj.hmlstm_stochastic_step(params, carry, x, half)
  assert_trees_close(got_carry, want_carry, rtol=1e-12)
  np.testing.assert_allclose(got_y, want_y, rtol=1e-12)

  u = jax.random.uniform(jax.random.key(7), (B, 1), jnp.float64)
  got, _, logp = rj.hmlstm_stochastic_step(params, carry, x, u)
  p0 = jax.tree.map(np.asarray, params.layers[0])
  h1, h2, z1 = (np.asarray(a) for a in (carry.h[0], carry.h[1], carry.z[0]))
  s = h1 @ p0.w_rec + p0.b + np.asarray(x) @ p0.w_below + z1 * (h2 @ p0.w_above)
  prob = np.clip((2.5 * s[:, -1] + 1) / 2, 0, 1)
  z = (np.asarray(u[:, 0]) < prob).astype(float)
  np.testing.assert_array_equal(np.asarray(got.z[0][:, 0]), z)  # level 1 always reads: no COPY
  want_logp = np.log(np.where(z == 1, prob, 1 - prob))
  np.testing.assert_allclose(logp, want_logp, rtol=1e-12)
  # z passes no gradient; log P(z) does, into the detector's column only
  g = jax.grad(lambda p: rj.hmlstm_stochastic_step(p, carry, x, u)[2].sum())(params)
  assert np.any(np.asarray(g.layers[0].b[-1]) != 0) and np.all(np.asarray(g.layers[0].b[:-1]) == 0)
  with pytest.raises(ValueError, match=r"u has 2 columns but the cell has 1 boundaries"):
    rj.hmlstm_stochastic_step(params, carry, x, jnp.zeros((B, 2)))

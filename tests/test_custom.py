"""Bring your own cell: a plain step function gets the scan, the hand-written BPTT,
the layers and the Jacobian tools, held equal to the built-in cells and to autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import jacobian as jac
from tests.helpers import assert_trees_close, f64

H, I = 4, 3


@pytest.fixture(autouse=True)
def _user_code_broadcasts():
  """The users' steps below add a [kH] bias to [B, kH] as NumPy code does; the suite
  raises on rank promotion elsewhere to catch it inside the library."""
  with jax.numpy_rank_promotion("allow"):
    yield


def _lstm_init(key, input_size):
  p = rj.lstm(H).init(key, input_size)
  return {"gates": {"x": p.w_x, "h": p.w_h}, "bias": p.b}  # a user's own layout


def _lstm_step(p, carry, x):
  """The LSTM written out plainly, on a (c, h) tuple carry."""
  c, h = carry
  z = x @ p["gates"]["x"] + h @ p["gates"]["h"] + p["bias"]
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


def _zeros(shape=(), dtype=jnp.float32):
  return (jnp.zeros((*shape, H), dtype), jnp.zeros((*shape, H), dtype))


my_lstm = rj.custom_cell(_lstm_init, _lstm_step, _zeros, name="my_lstm", output_size=H)


def _same_weights(key):
  p = f64(rj.lstm(H).init(key, I))
  p = p._replace(b=p.b + 0.3 * jax.random.normal(jax.random.fold_in(key, 1), p.b.shape))
  return p, {"gates": {"x": p.w_x, "h": p.w_h}, "bias": p.b}


def test_custom_lstm_equals_the_builtin_with_lengths_and_reverse():
  builtin, mine = _same_weights(jax.random.key(0))
  xs = jax.random.normal(jax.random.key(1), (6, 3, I), jnp.float64)
  lengths = jnp.array([6, 4, 0])
  for reverse in (False, True):
    (c, h), ys = rj.scan(my_lstm, mine, xs, lengths=lengths, reverse=reverse)
    ref_carry, ref = rj.scan(rj.lstm(H), builtin, xs, lengths=lengths, reverse=reverse)
    np.testing.assert_allclose(ys, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, ref_carry.h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, ref_carry.c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backward", ["bptt", "checkpoint"])
def test_custom_cell_gradients_equal_autodiff(backward):
  _, mine = _same_weights(jax.random.key(2))
  xs = jax.random.normal(jax.random.key(3), (7, 3, I), jnp.float64)
  carry0 = jax.tree.map(lambda a: a + 0.1, _zeros((3,), jnp.float64))
  lengths = jnp.array([7, 2, 5])

  def loss(p, x, c0, mode):
    (c, h), ys = rj.scan(my_lstm, p, x, c0, lengths=lengths, reverse=True, backward=mode)
    return jnp.sum(ys**2) + jnp.sum(jnp.sin(c)) + jnp.sum(h)

  got = jax.grad(loss, argnums=(0, 1, 2))(mine, xs, carry0, backward)
  assert_trees_close(got, jax.grad(loss, argnums=(0, 1, 2))(mine, xs, carry0, "autodiff"))
  assert float(jnp.abs(got[1][:, 1][2:]).max()) == 0.0  # padding gets no gradient


def _readout_init(key, input_size):
  k1, k2 = jax.random.split(key)
  return {"w": jax.random.normal(k1, (input_size + H, H)) / 3, "out": jax.random.normal(k2, (H, 5))}


def _readout_step(p, h, x):
  """h' = tanh([x, h] W); y = h' U: an output that is not the carry (O = 5)."""
  h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
  return h, h @ p["out"]


readout = rj.custom_cell(
  _readout_init,
  _readout_step,
  lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, H), dtype),
  name="readout",
  output_size=5,
)


def test_an_output_that_is_not_the_carry_and_the_layers():
  p = f64(readout.init(jax.random.key(0), I))
  xs = jax.random.normal(jax.random.key(1), (5, 2, I), jnp.float64)
  h, ys = rj.scan(readout, p, xs)
  assert ys.shape == (5, 2, 5) and h.shape == (2, H)
  ref_h, ref_ys = h0, out = jnp.zeros((2, H), jnp.float64), []
  for t in range(5):
    ref_h, y = _readout_step(p, ref_h, xs[t])
    out.append(y)
  np.testing.assert_allclose(ys, jnp.stack(out), rtol=1e-12)
  del ref_ys, h0

  def loss(p, mode):
    return jnp.sum(jnp.cos(rj.scan(readout, p, xs, backward=mode)[1]))

  assert_trees_close(jax.grad(loss)(p, "bptt"), jax.grad(loss)(p, "autodiff"))
  layers = rj.init_stacked(jax.random.key(2), [readout, my_lstm], I, bidirectional=True)
  _, ys = rj.stacked(layers, xs.astype(jnp.float32))
  assert ys.shape == (5, 2, 2 * H)  # 2·5 features fed the LSTM
  ys_jit = jax.jit(rj.scan)(readout, p, xs)[1]  # a custom cell is static too
  np.testing.assert_allclose(ys_jit, rj.scan(readout, p, xs)[1], rtol=1e-12)


def test_jacobian_tools_measure_a_custom_cell():
  builtin, mine = _same_weights(jax.random.key(4))
  xs = jax.random.normal(jax.random.key(5), (12, I), jnp.float64)
  measured = jac.step_jacobians(my_lstm, mine, xs)  # jax.jacfwd, state s = [c; h]
  closed = jac.step_jacobians(rj.lstm(H), builtin, xs)  # closed form, s = [h; c]
  perm = np.r_[H : 2 * H, 0:H]  # reorder [c; h] -> [h; c]
  np.testing.assert_allclose(measured[:, perm][:, :, perm], closed, rtol=1e-10, atol=1e-12)
  # the finite-time exponents depend on the random initial basis (here in permuted
  # coordinates); their sum, the mean log |det J_t|, does not
  np.testing.assert_allclose(
    jnp.sum(jac.lyapunov_spectrum(my_lstm, mine, xs)),
    jnp.sum(jac.lyapunov_spectrum(rj.lstm(H), builtin, xs)),
    rtol=1e-9,
  )
  report = jac.diagnose(my_lstm, mine, xs)
  assert "pascanu" not in report and report["state_size"] == 2 * H
  with pytest.raises(ValueError, match=r"declares no activation"):
    jac.lecture_bound(my_lstm, mine, xs)


def test_custom_cell_errors():
  with pytest.raises(TypeError, match=r"rnnjax.custom_cell: step must be callable, got int"):
    rj.custom_cell(_lstm_init, 3, _zeros)

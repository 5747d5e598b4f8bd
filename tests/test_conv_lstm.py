"""The convolutional LSTM (rnnjax/_src/cells/conv_lstm.py), held to flax's
``ConvLSTMCell`` run in a Python loop with copied weights, and its hand-written
BPTT to autodiff, in float64 on 4x4 frames of 2 channels."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import ConvLSTMParams, conv_lstm
from tests.helpers import assert_trees_close

T, B, HW, C, F = 3, 2, (4, 4), 2, 3
K = (3, 3)
I = HW[0] * HW[1] * C
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _flax_setup(seed=0):
  """flax's cell, its params (biases made non-zero), frames [T, B, H, W, C] and
  a non-zero initial carry (c, h), all float64."""
  rng = np.random.default_rng(seed)
  ref = nn.ConvLSTMCell(features=F, kernel_size=K, param_dtype=jnp.float64)
  xs = jnp.asarray(rng.standard_normal((T, B, *HW, C)))
  c0 = jnp.asarray(0.5 * rng.standard_normal((B, *HW, F)))
  h0 = jnp.asarray(0.5 * rng.standard_normal((B, *HW, F)))
  variables = ref.init(jax.random.key(1), (c0, h0), xs[0])
  p = variables["params"]
  for name in ("ih", "hh"):
    p[name]["bias"] = jnp.asarray(0.3 * rng.standard_normal(4 * F))
  return ref, {"params": p}, xs, (c0, h0)


def _blocks(w):
  """flax's gate order (i, g, f, o) on the last axis, as rnnjax's (i, f, g, o)."""
  i, g, f, o = jnp.split(w, 4, axis=-1)
  return jnp.concatenate([i, f, g, o], axis=-1)


def _copy(variables, forget_bias=1.0):
  p = variables["params"]
  b = _blocks(p["ih"]["bias"] + p["hh"]["bias"]).at[F : 2 * F].add(forget_bias)
  return ConvLSTMParams(w_ih=_blocks(p["ih"]["kernel"]), w_hh=_blocks(p["hh"]["kernel"]), b=b)


def _flat(a):
  return a.reshape(*a.shape[: a.ndim - 3], -1)


def test_matches_flax_conv_lstm_cell():
  ref, variables, xs, (c0, h0) = _flax_setup()
  carry, ys_ref = (c0, h0), []
  for t in range(T):
    carry, y = ref.apply(variables, carry, xs[t])
    ys_ref.append(y)
  c_ref, h_ref = carry

  cell = conv_lstm(F, K, HW)
  params = _copy(variables)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
    jnp.shape, jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
  )
  final, ys = rj.scan(cell, params, _flat(xs), rj.LSTMCarry(_flat(h0), _flat(c0)))
  assert ys.shape == (T, B, HW[0] * HW[1] * F)
  assert_trees_close(ys.reshape(T, B, *HW, F), jnp.stack(ys_ref), **TOL)
  assert_trees_close(final, rj.LSTMCarry(_flat(h_ref), _flat(c_ref)), **TOL)


def test_init_matches_flax_layout_and_forget_bias(key):
  ref = nn.ConvLSTMCell(features=F, kernel_size=K)
  x = jnp.zeros((B, *HW, C), jnp.float32)
  flax_params = ref.init(key, ref.initialize_carry(key, x.shape), x)["params"]
  params = conv_lstm(F, K, HW).init(key, I)
  assert params.w_ih.shape == flax_params["ih"]["kernel"].shape
  assert params.w_hh.shape == flax_params["hh"]["kernel"].shape
  np.testing.assert_array_equal(params.b, np.r_[np.zeros(F), np.ones(F), np.zeros(2 * F)])
  # LeCun normal over fan-in prod(K)·C, as flax's Conv
  assert 0.5 < float(jnp.std(params.w_ih)) * np.sqrt(9 * C) < 1.5


@pytest.mark.parametrize("lengths", [None, np.array([3, 1])])
def test_bptt_gradients_equal_autodiff(lengths):
  _, variables, xs, (c0, h0) = _flax_setup(seed=1)
  cell = conv_lstm(F, K, HW)
  params, xs, carry0 = _copy(variables), _flat(xs), rj.LSTMCarry(_flat(h0), _flat(c0))
  w = jnp.asarray(np.random.default_rng(2).standard_normal((T, B, HW[0] * HW[1] * F)))

  def loss(backward, params, xs, carry0):
    final, ys = rj.scan(cell, params, xs, carry0, lengths=lengths, backward=backward)
    return jnp.sum(w * ys) + jnp.sum(jnp.sin(final.c)) + jnp.sum(final.h**2)

  grads = {
    b: jax.jit(jax.grad(loss, argnums=(1, 2, 3)), static_argnums=0)(b, params, xs, carry0)
    for b in ("bptt", "autodiff")
  }
  assert_trees_close(grads["bptt"], grads["autodiff"], **TOL)
  assert float(jnp.abs(grads["bptt"][0].w_hh).max()) > 0


def test_unbatched_step_and_errors(key):
  cell = conv_lstm(F, 3, HW)  # an int kernel size: the same for every axis
  assert cell == conv_lstm(F, 3, HW)
  params = cell.init(key, I)
  assert params.w_ih.shape == (3, 3, C, 4 * F)
  x = jnp.ones((B, I))
  _, y = cell.step(params, cell.initial_carry((B,)), x)
  one, y1 = cell.step(params, cell.initial_carry(), x[0])  # one example, as the Jacobian tools
  assert_trees_close(y1, y[0], rtol=1e-6, atol=1e-6)
  assert one.c.shape == (HW[0] * HW[1] * F,)
  with pytest.raises(ValueError, match="not a multiple of prod"):
    cell.init(key, I + 1)
  with pytest.raises(ValueError, match="spatial_shape has 2"):
    conv_lstm(F, (3, 3, 3), HW)
  with pytest.raises(ValueError, match="features"):
    conv_lstm(0, K, HW)


def test_the_input_convolution_is_hoisted_out_of_the_loop(key):
  """One input convolution over all T·B frames before the scan; only w_h ∗ h inside it."""
  cell = conv_lstm(3, (3, 3), (4, 4))
  params = cell.init(key, 4 * 4 * 2)
  xs = jnp.ones((3, 2, 4 * 4 * 2))
  jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(cell, p, x, backward="autodiff"))(params, xs).jaxpr

  def count(eqns):
    return sum(e.primitive.name == "conv_general_dilated" for e in eqns)

  body = next(e for e in jaxpr.eqns if e.primitive.name == "scan").params["jaxpr"].jaxpr
  assert count(body.eqns) == 1  # w_h ∗ h_{t-1}
  assert count(jaxpr.eqns) == 1  # w_i ∗ x for all frames, outside the loop

"""Each cell against an independent implementation: flax's cells with copied
weights, and a direct transcription of the lecture's GRU formula."""

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import interop
from tests.helpers import CELLS, assert_trees_close, f64

I, H, B = 3, 5, 4


def _flax(module_cls, key, **kw):
  mod = module_cls(features=H, param_dtype=jnp.float64, dtype=jnp.float64, **kw)
  x = jax.random.normal(key, (B, I))
  carry = mod.initialize_carry(key, x.shape)
  variables = mod.init(key, carry, x)
  return mod, variables["params"]


def _perturbed(params, key):
  """Non-zero biases everywhere, so a bias mix-up cannot pass."""
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  return jax.tree.unflatten(
    tree,
    [l + 0.3 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys, strict=True)],
  )


@pytest.mark.parametrize(
  ("kind", "flax_cls", "cell"),
  [
    ("elman", nn.SimpleCell, rj.elman(H)),
    ("gru", nn.GRUCell, rj.gru(H, reset="after")),
    ("lstm", nn.LSTMCell, rj.lstm(H)),
    ("lstm", nn.OptimizedLSTMCell, rj.lstm(H)),
  ],
)
def test_cell_equals_flax(kind, flax_cls, cell, key):
  k1, k2, k3, k4 = jax.random.split(key, 4)
  mod, fparams = _flax(flax_cls, k1)
  fparams = _perturbed(fparams, k2)
  params = interop.from_flax(kind, fparams)
  x = jax.random.normal(k3, (B, I))
  h = jax.random.normal(k4, (B, H))
  if kind == "lstm":
    c = 0.5 * h[::-1]
    (fc, fh), fy = mod.apply({"params": fparams}, (c, h), x)
    carry, y = cell.step(params, rj.LSTMCarry(h, c), x)
    assert_trees_close((carry.h, carry.c, y), (fh, fc, fy))
  else:
    fcarry, fy = mod.apply({"params": fparams}, h, x)
    carry, y = cell.step(params, h, x)
    assert_trees_close((carry, y), (fcarry, fy))


def test_gru_before_is_the_lecture_formula(key):
  """r = σ(W_xr x + W_hr h + b_r), z = σ(...), h~ = tanh(W_xh x + W_hh (r ⊙ h) + b_h),
  h = z ⊙ h + (1 − z) ⊙ h~, written with column vectors as on the slide."""
  cell = rj.gru(H, reset="before")
  params = _perturbed(f64(cell.init(key, I)), jax.random.key(1))
  W_x, W_h, b = params.w_x.T, params.w_h.T, params.b  # column-vector matrices
  W_xr, W_xz, W_xh = W_x[:H], W_x[H : 2 * H], W_x[2 * H :]
  W_hr, W_hz, W_hh = W_h[:H], W_h[H : 2 * H], W_h[2 * H :]
  b_r, b_z, b_h = b[:H], b[H : 2 * H], b[2 * H :]

  def sig(v):
    return 1 / (1 + np.exp(-v))

  x = np.asarray(jax.random.normal(jax.random.key(2), (I,)))
  h = np.asarray(jax.random.normal(jax.random.key(3), (H,)))
  r = sig(W_xr @ x + W_hr @ h + b_r)
  z = sig(W_xz @ x + W_hz @ h + b_z)
  h_tilde = np.tanh(W_xh @ x + W_hh @ (r * h) + b_h)
  expected = z * h + (1 - z) * h_tilde
  h_new, y = cell.step(params, jnp.asarray(h), jnp.asarray(x))
  np.testing.assert_allclose(h_new, expected, rtol=1e-12)
  np.testing.assert_allclose(y, expected, rtol=1e-12)
  # and it differs from the "after" form on the same weights
  after = rj.gru(H, reset="after")
  h_after, _ = after.step(params._replace(b_hn=jnp.zeros(H)), jnp.asarray(h), jnp.asarray(x))
  assert np.max(np.abs(h_after - expected)) > 1e-3


def test_elman_is_the_lecture_formula(key):
  """h = tanh(V x + W h + b) with V = w_xᵀ, W = w_hᵀ; relu/sigmoid/linear likewise."""
  for act, f in [
    ("tanh", np.tanh),
    ("relu", lambda v: np.maximum(v, 0)),
    ("sigmoid", lambda v: 1 / (1 + np.exp(-v))),
    ("linear", lambda v: v),
  ]:
    cell = rj.elman(H, act)
    p = _perturbed(f64(cell.init(key, I)), jax.random.key(4))
    x = np.asarray(jax.random.normal(jax.random.key(5), (I,)))
    h = np.asarray(jax.random.normal(jax.random.key(6), (H,)))
    V, W = np.asarray(p.w_x).T, np.asarray(p.w_h).T
    h_new, _ = cell.step(p, jnp.asarray(h), jnp.asarray(x))
    np.testing.assert_allclose(h_new, f(V @ x + W @ h + np.asarray(p.b)), rtol=1e-12)


def test_lstm_gate_order_is_ifgo(key):
  """Saturating one gate block at a time shows which block does what."""
  cell = rj.lstm(H)
  p = f64(cell.init(key, I))
  p = p._replace(w_x=jnp.zeros_like(p.w_x), w_h=jnp.zeros_like(p.w_h))
  big = 30.0
  c0 = jnp.full((H,), 0.7)
  carry0 = rj.LSTMCarry(jnp.zeros(H), c0)
  x = jnp.zeros(I)
  # i=1, f=0, g=tanh(big)=1, o=1: c = 1, h = tanh(1)
  b = jnp.concatenate([jnp.full(H, big), jnp.full(H, -big), jnp.full(H, big), jnp.full(H, big)])
  carry, _ = cell.step(p._replace(b=b), carry0, x)
  np.testing.assert_allclose(carry.c, 1.0, atol=1e-12)
  # i=0, f=1, o=0: c keeps 0.7 and h is 0
  b = jnp.concatenate([jnp.full(H, -big), jnp.full(H, big), jnp.zeros(H), jnp.full(H, -big)])
  carry, _ = cell.step(p._replace(b=b), carry0, x)
  np.testing.assert_allclose(carry.c, 0.7, atol=1e-12)
  np.testing.assert_allclose(carry.h, 0.0, atol=1e-12)


def test_params_and_carry_shapes(key):
  for cell, k in [(rj.elman(H), 1), (rj.gru(H), 3), (rj.lstm(H), 4)]:
    p = cell.init(key, I)
    chex.assert_shape([p.w_x, p.w_h, p.b], [(I, k * H), (H, k * H), (k * H,)])
    chex.assert_type(p.w_x, jnp.float32)
    assert cell.gates == k
  chex.assert_shape(rj.gru(H, reset="after").init(key, I).b_hn, (H,))
  assert rj.gru(H).init(key, I).b_hn is None
  carry = rj.lstm(H).initial_carry((2, 3))
  chex.assert_shape([carry.h, carry.c], (2, 3, H))
  chex.assert_shape(rj.elman(H).initial_carry(), (H,))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_project_over_a_sequence_equals_each_step(name, key):
  """cell.project over [T, B, I] is the projection of each step, and a step is
  fast_step on that projection, then the output."""
  T = 4
  cell = CELLS[name](H)
  p = _perturbed(f64(cell.init(key, I)), jax.random.key(1))
  xs = jax.random.normal(jax.random.key(2), (T, B, I))
  zx = cell.project(p, xs)
  chex.assert_shape(zx, (T, B, cell.gates * H))
  for t in range(T):
    np.testing.assert_allclose(zx[t], cell.project(p, xs[t]), rtol=1e-13, atol=1e-14)
  np.testing.assert_allclose(zx[1, 2], xs[1, 2] @ p.w_x + p.b, rtol=1e-13)
  carry = jax.tree.map(lambda c: c + 0.5, cell.initial_carry((B,), jnp.float64))
  fast_carry, _ = cell.fast_step(p, carry, zx[0])
  assert_trees_close(cell.step(p, carry, xs[0]), (fast_carry, cell.output(fast_carry)))


def test_cell_options_errors():
  with pytest.raises(ValueError, match=r"unknown activation 'softplus'.*'relu', 'sigmoid'"):
    rj.elman(4, activation="softplus")
  with pytest.raises(ValueError, match=r"unknown reset 'middle'.*\['after', 'before'\]"):
    rj.gru(4, reset="middle")
  with pytest.raises(ValueError, match=r"hidden_size must be a positive int, got 0"):
    rj.lstm(0)
  with pytest.raises(ValueError, match=r"input_size must be a positive int, got -2"):
    rj.lstm(3).init(jax.random.key(0), -2)

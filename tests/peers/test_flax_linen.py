"""What flax's own suite asserts about ``flax.linen.RNN`` and ``nn.Bidirectional``
(tests/linen/linen_recurrent_test.py), asserted of ``rnnjax.nnx.LinenRNN``.

Not applicable: the nn.scan-of-a-cell equivalence (``test_numerical_equivalence_
single_batch_nn_scan``) drives flax's cell class through linen's lifted scan; here
the same behaviour (one batch element alone equals the batch) is checked on rnnjax's
module. Parameter *names* (``kernel``/``bias`` per gate) are flax's cell layout;
rnnjax's params are one NamedTuple (``w_x``, ``w_h``, ``b``), whose shapes are checked.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
import rnnjax.nnx as rnx
from tests.peers._common import B, H, I, T, inputs


def _init(layer, xs, **kw):
  out, variables = layer.init_with_output(jax.random.key(0), xs, **kw)
  return out, variables


def _check_params(params, n_in):
  assert params.w_x.shape == (n_in, 4 * H) and params.w_h.shape == (H, 4 * H)
  assert params.b.shape == (4 * H,)


def test_basic_forward_and_param_shapes():
  (carry, ys), variables = _init(rnx.LinenRNN(rj.lstm(H), return_carry=True), inputs())
  assert ys.shape == (B, T, H)
  assert [a.shape for a in carry] == [(B, H), (B, H)]  # (c, h)
  _check_params(variables["params"]["cell"], I)


def test_multiple_batch_dims():
  (carry, ys), variables = _init(
    rnx.LinenRNN(rj.lstm(H), return_carry=True), inputs(shape=(2, 3, T, I))
  )
  assert ys.shape == (2, 3, T, H) and carry[0].shape == (2, 3, H)
  _check_params(variables["params"]["cell"], I)


def test_unroll():
  ys, variables = _init(rnx.LinenRNN(rj.lstm(H), unroll=3), inputs())
  assert ys.shape == (B, T, H)
  np.testing.assert_allclose(ys, rnx.LinenRNN(rj.lstm(H)).apply(variables, inputs()), rtol=1e-12)


def test_time_major_carry_not_zeros():
  (carry, ys), _ = _init(
    rnx.LinenRNN(rj.lstm(H), time_major=True, return_carry=True), jnp.ones((T, B, I))
  )
  assert ys.shape == (T, B, H)
  for leaf in jax.tree.leaves(carry):
    assert leaf.shape == (B, H) and not np.allclose(leaf, 0.0)


def test_spatial_frames_conv_lstm():
  """test_rnn_with_spatial_dimensions: frames [B, T, *S, C] in, [B, T, *S, F] out."""
  S, C, F = (4, 4), 2, 3
  layer = rnx.LinenRNN(rj.conv_lstm(F, 3, S))
  xs = jnp.ones((B, T, *S, C))
  ys, variables = _init(layer, xs)
  carry, ys2 = layer.apply(variables, xs, return_carry=True)
  assert ys.shape == (B, T, *S, F)
  np.testing.assert_array_equal(ys, ys2)
  for leaf in jax.tree.leaves(carry):
    assert leaf.shape == (B, *S, F) and not np.allclose(leaf, 0.0)
  p = variables["params"]["cell"]
  assert p.b.shape == (4 * F,) and p.w_ih.shape[-2:] == (C, 4 * F)
  assert p.w_hh.shape[-2:] == (F, 4 * F)


def _step_loop(cell, params, xs, carry):
  ys = []
  for t in range(xs.shape[1]):
    carry, y = cell.step(params, carry, xs[:, t])
    ys.append(y)
  return carry, jnp.stack(ys, 1)


def _flax(c):
  return (c.c, c.h)


def test_numerical_equivalence_with_a_step_loop_and_lax_scan():
  """test_numerical_equivalence (+ _single_batch_jax_scan): every output and the
  final carry equal the cell stepped by hand, and a jax.lax.scan of the step."""
  cell = rj.lstm(H)
  (carry, ys), variables = _init(rnx.LinenRNN(cell, return_carry=True), inputs())
  params = variables["params"]["cell"]
  c_loop, ys_loop = _step_loop(cell, params, inputs(), cell.initial_carry((B,), jnp.float64))
  np.testing.assert_allclose(ys, ys_loop, rtol=1e-12)
  np.testing.assert_allclose(carry, _flax(c_loop), rtol=1e-12)
  c_scan, ys_scan = jax.lax.scan(
    lambda c, x: cell.step(params, c, x),
    cell.initial_carry((B,), jnp.float64),
    jnp.swapaxes(inputs(), 0, 1),
  )
  np.testing.assert_allclose(ys, jnp.swapaxes(ys_scan, 0, 1), rtol=1e-12)
  np.testing.assert_allclose(carry, _flax(c_scan), rtol=1e-12)


def test_numerical_equivalence_with_mask():
  """With seq_lengths in [1, T]: valid outputs equal the loop's, the carry is the
  loop's carry at each sequence's last valid step."""
  cell = rj.lstm(H)
  lengths = jnp.array([2, T])
  layer = rnx.LinenRNN(cell, return_carry=True)
  (carry, ys), variables = _init(layer, inputs(), seq_lengths=lengths)
  params = variables["params"]["cell"]
  carry0 = cell.initial_carry((B,), jnp.float64)
  for b, L in enumerate(np.asarray(lengths)):
    c, y = _step_loop(cell, params, inputs()[:, :L], carry0)
    np.testing.assert_allclose(ys[b, :L], y[b], rtol=1e-12)
    np.testing.assert_allclose([a[b] for a in carry], [a[b] for a in _flax(c)], rtol=1e-12)


def test_single_batch_element_equals_the_batch():
  layer = rnx.LinenRNN(rj.lstm(H), return_carry=True)
  (carry, ys), variables = _init(layer, inputs())
  for b in range(B):
    c1, y1 = layer.apply(variables, inputs()[b : b + 1])
    np.testing.assert_allclose(y1[0], ys[b], rtol=1e-12)
    np.testing.assert_allclose([a[0] for a in c1], [a[b] for a in carry], rtol=1e-12)


@pytest.mark.parametrize("keep_order", [False, True])
def test_reverse_and_keep_order(keep_order):
  """test_reverse / test_reverse_but_keep_order: step i reads xs[T-1-i]; its
  output sits at i, or with keep_order at T-1-i; the carry is the last step's."""
  cell = rj.lstm(H)
  layer = rnx.LinenRNN(cell, return_carry=True, reverse=True, keep_order=keep_order)
  (carry, ys), variables = _init(layer, inputs())
  c, y = _step_loop(
    cell, variables["params"]["cell"], inputs()[:, ::-1], cell.initial_carry((B,), jnp.float64)
  )
  np.testing.assert_allclose(ys, y[:, ::-1] if keep_order else y, rtol=1e-12)
  np.testing.assert_allclose(carry, _flax(c), rtol=1e-12)


@pytest.mark.parametrize("time_major", [False, True])
def test_flip_sequence(time_major):
  """test_flip_sequence*: each sequence reversed inside its length, padding kept,
  with trailing feature axes; rj.flip is time-major, batch-major goes through a swap."""
  x = jnp.arange(2 * 5 * 3).reshape(2, 5, 3)  # [B, T, F]
  lengths = jnp.array([4, 2])
  tm = jnp.swapaxes(x, 0, 1)
  flipped = rj.flip(tm, lengths) if time_major else jnp.swapaxes(rj.flip(tm, lengths), 0, 1)
  f = jnp.swapaxes(flipped, 0, 1) if time_major else flipped
  np.testing.assert_array_equal(f[0, :4], x[0, :4][::-1])
  np.testing.assert_array_equal(f[1, :2], x[1, :2][::-1])
  np.testing.assert_array_equal(f[1, 2:], x[1, 2:])


def test_basic_seq_lengths():
  x = jnp.ones((2, 6, I))
  layer = rnx.LinenRNN(rj.lstm(8))
  variables = layer.init(jax.random.key(0), x)
  assert layer.apply(variables, x, seq_lengths=jnp.array([5, 5])).shape == (2, 6, 8)


def _bi(**kw):
  return nn.Bidirectional(rnx.LinenRNN(rj.lstm(H)), rnx.LinenRNN(rj.lstm(H)), **kw)


def test_linen_bidirectional_drives_linen_rnn():
  """test_bidirectional: flax's nn.Bidirectional runs two rnnjax modules (it calls them
  with init_key, return_carry, time_major, reverse, keep_order); the backward half
  equals a reversed, order-kept run."""
  ys, variables = _init(_bi(), inputs())
  assert ys.shape == (B, T, 2 * H)
  bwd = rnx.LinenRNN(rj.lstm(H), reverse=True, keep_order=True)
  want = bwd.apply({"params": variables["params"]["backward_rnn"]}, inputs())
  np.testing.assert_allclose(ys[..., H:], want, rtol=1e-12)


def test_shared_cell():
  layer = rnx.LinenRNN(rj.lstm(H))
  ys, _ = _init(nn.Bidirectional(layer, layer), inputs())
  assert ys.shape == (B, T, 2 * H)


def test_custom_merge_fn():
  ys, _ = _init(_bi(merge_fn=lambda a, b: a + b), inputs())
  assert ys.shape == (B, T, H)


def test_bidirectional_return_carry():
  (carry, ys), _ = _init(_bi(return_carry=True), inputs())
  fwd, bwd = carry
  assert ys.shape == (B, T, 2 * H)
  assert jax.tree.map(jnp.shape, fwd) == ((B, H), (B, H))
  assert jax.tree.map(jnp.shape, bwd) == ((B, H), (B, H))


def test_linen_and_nnx_modules_agree():
  (carry, ys), variables = _init(rnx.LinenRNN(rj.lstm(H), return_carry=True), inputs())
  nnx_rnn = rnx.RNN(rj.lstm(H), I, params=variables["params"]["cell"], return_carry=True)
  np.testing.assert_allclose(nnx_rnn(inputs())[1], ys, rtol=1e-12)
  np.testing.assert_allclose(nnx_rnn(inputs())[0], carry, rtol=1e-12)

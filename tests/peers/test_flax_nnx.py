"""What flax's own suite asserts about ``flax.nnx.RNN`` (tests/nnx/nn/recurrent_test.py,
class TestRNN), asserted of ``rnnjax.nnx.RNN``; where flax only checks a shape, the
outputs are also held to flax's with the same weights.

Not applicable (they test flax's cell classes, not the RNN module): LSTMCell's own
basic call, sequence loop, dtypes, custom gate activations, initialize_carry and
stateful tests, and the LSTMCell linen/nnx equivalence (rnnjax's cells are compared
with flax's in tests/test_cells.py and tests/test_nnx.py).
"""

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnnjax as rj
import rnnjax.nnx as rnx
from tests.peers._common import B, H, I, T, flax_lstm, inputs


def _pair(**kw):
  """flax's nnx.RNN and rnnjax's with the same LSTM weights."""
  fcell, params = flax_lstm()
  return nnx.RNN(fcell, **kw), rnx.RNN(rj.lstm(H), I, params=params, **kw)


@pytest.mark.parametrize("make", [rj.lstm, rj.gru], ids=["lstm", "gru"])
def test_rnn_with_cell_and_initialize_carry(make):
  """test_rnn_with_lstm_cell / test_rnn_with_gru_cell: the carry from
  module.cell.initialize_carry((B, I), rngs) goes in, outputs are [B, T, H]."""
  rnn = rnx.RNN(make(H), I, rngs=nnx.Rngs(0))
  assert (rnn.cell.in_features, rnn.cell.hidden_features, rnn.cell.num_feature_axes) == (I, H, 1)
  carry = rnn.cell.initialize_carry((B, I), nnx.Rngs(0))
  assert rnn(inputs(), initial_carry=carry).shape == (B, T, H)
  assert copy.deepcopy(rnn.cell) == rnn.cell and rnn.cell.rnnjax_cell == make(H)


def test_lstm_carry_is_flax_c_h_and_values_match():
  """The carry in and out is flax's (c, h): the same values as flax's nnx.RNN."""
  theirs, ours = _pair(return_carry=True)
  c0 = (0.3 * jnp.ones((B, H)), -0.2 * jnp.ones((B, H)))  # (c, h)
  (c, h), ys = ours(inputs(), initial_carry=c0)
  (fc, fh), fys = theirs(inputs(), initial_carry=c0)
  np.testing.assert_allclose(ys, fys, rtol=1e-10)
  np.testing.assert_allclose(c, fc, rtol=1e-10)
  np.testing.assert_allclose(h, fh, rtol=1e-10)
  assert ours.cell.initialize_carry((B, I))[0].shape == (B, H)


def test_time_major():
  theirs, ours = _pair(time_major=True)
  x = inputs(shape=(T, B, I))
  carry = ours.cell.initialize_carry(x.shape[1:2] + x.shape[2:], nnx.Rngs(2))
  ys = ours(x, initial_carry=carry)
  assert ys.shape == (T, B, H)
  np.testing.assert_allclose(ys, theirs(x), rtol=1e-10)


@pytest.mark.parametrize("keep_order", [False, True])
def test_reverse_and_keep_order(keep_order):
  """test_rnn_reverse / test_rnn_with_keep_order: shapes, and flax's order of outputs."""
  theirs, ours = _pair(reverse=True, keep_order=keep_order)
  x = jnp.tile(jnp.arange(T, dtype=jnp.float64)[None, :, None], (B, 1, I))
  ys = ours(x)
  assert ys.shape == (B, T, H)
  np.testing.assert_allclose(ys, theirs(x), rtol=1e-10)


def test_seq_lengths_final_carry():
  """test_rnn_with_seq_lengths: carry[0] (c) and carry[1] (h) are [B, H]; here also
  equal to flax's carry after each sequence's last valid step."""
  theirs, ours = _pair(return_carry=True)
  x = jnp.concatenate([inputs()[:1].at[:, 3:].set(0.0), inputs()[1:]])
  lengths = jnp.array([3, T])
  (c, h), ys = ours(x, seq_lengths=lengths)
  (fc, fh), fys = theirs(x, seq_lengths=lengths)
  assert ys.shape == (B, T, H) and c.shape == h.shape == (B, H)
  np.testing.assert_allclose(c, fc, rtol=1e-10)
  np.testing.assert_allclose(h, fh, rtol=1e-10)
  np.testing.assert_allclose(ys[0, :3], fys[0, :3], rtol=1e-10)
  np.testing.assert_allclose(ys[1], fys[1], rtol=1e-10)


@pytest.mark.xfail(
  strict=True,
  reason="on purpose: rnnjax zeros the outputs past seq_lengths; flax returns what its "
  "cell computed on the padding (docs/nnx.md)",
)
def test_outputs_on_padding_equal_flax():
  theirs, ours = _pair()
  lengths = jnp.array([3, T])
  np.testing.assert_allclose(
    ours(inputs(), seq_lengths=lengths), theirs(inputs(), seq_lengths=lengths), rtol=1e-10
  )


def test_equivalence_with_linen():
  """test_rnn_equivalence_with_flax_linen: the NNX module and the linen one agree."""
  _, ours = _pair()
  cell, params = ours.to_layer()
  linen_rnn = rnx.LinenRNN(cell)
  np.testing.assert_allclose(
    ours(inputs()), linen_rnn.apply({"params": {"cell": params}}, inputs()), rtol=1e-12
  )


def test_unroll():
  _, ours = _pair()
  unrolled = rnx.RNN(rj.lstm(H), I, params=ours.to_layer()[1], unroll=2)
  x = inputs(shape=(B, 6, I))
  assert unrolled(x).shape == (B, 6, H)
  np.testing.assert_allclose(unrolled(x), ours(x), rtol=1e-12)


def test_custom_cell():
  """test_rnn_with_custom_cell: a user's cell (h' = tanh([x, h] W)) runs in the module."""

  def init(key, input_size):
    return {"w": jax.random.normal(key, (input_size + H, H)) / 3}

  def step(p, h, x):
    h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
    return h, h

  def zeros(shape=(), dtype=jnp.float32):
    return jnp.zeros((*shape, H), dtype)

  cell = rj.custom_cell(init, step, zeros, name="concat_rnn")
  rnn = rnx.RNN(cell, I, rngs=nnx.Rngs(7))
  carry = rnn.cell.initialize_carry((B, I), nnx.Rngs(7))
  assert rnn(jnp.ones((B, T, I)), initial_carry=carry).shape == (B, T, H)


def test_half_precision_dtypes():
  """test_rnn_with_different_dtypes: float16 params and inputs give float16 outputs."""
  rnn = rnx.RNN(rj.lstm(H, dtype=jnp.float16, param_dtype=jnp.float16), I, rngs=nnx.Rngs(8))
  assert rnn.params.w_h.dtype == jnp.float16
  carry = rnn.cell.initialize_carry((B, I), nnx.Rngs(8))
  ys = rnn(jnp.ones((B, T, I), jnp.float16), initial_carry=jax.tree.map(jnp.float16, carry))
  assert ys.dtype == jnp.float16 and ys.shape == (B, T, H)


def test_variable_batch_size():
  rnn = rnx.RNN(rj.lstm(H), I, rngs=nnx.Rngs(9))
  for b in (1, 2, 5):
    carry = rnn.cell.initialize_carry((b, I), nnx.Rngs(9))
    assert rnn(jnp.ones((b, T, I)), initial_carry=carry).shape == (b, T, H)


def test_inputs_of_any_rank_and_integer_inputs():
  """flax's RNN takes [T, I] without a batch axis, [*batch, T, I], and int inputs."""
  theirs, ours = _pair(return_carry=True)
  x = jnp.arange(2 * 3 * T * I).reshape(2, 3, T, I) % 3 - 1  # int
  (c, h), ys = ours(x)
  (fc, fh), fys = theirs(x)
  assert ys.shape == (2, 3, T, H) and c.shape == (2, 3, H)
  np.testing.assert_allclose(ys, fys, rtol=1e-10)
  np.testing.assert_allclose(h, fh, rtol=1e-10)
  np.testing.assert_allclose(c, fc, rtol=1e-10)
  np.testing.assert_allclose(ours(x[0, 0])[1], theirs(x[0, 0])[1], rtol=1e-10)
  assert ours(x[0, 0])[1].shape == (T, H)


@pytest.mark.parametrize("broadcast", [True, False], ids=["broadcast", "per_step"])
def test_recurrent_dropout_from_rngs(broadcast):
  """test_recurrent_dropout: recurrent dropout drawn from a named stream, with
  broadcast_rngs one mask per call shared by every step, without it one per step;
  the stream advances once per call. Held to a step-by-step reference."""
  rate = 0.25
  kw = dict(broadcast_rngs="recurrent_dropout") if broadcast else {}
  rngs = nnx.Rngs(0, recurrent_dropout=1)
  rnn = rnx.RNN(rj.lstm(H), I, rngs=rngs, recurrent_dropout_rate=rate, **kw)
  assert rngs.recurrent_dropout.count[...] == 0
  x = inputs()
  ys = rnn(x)
  assert rngs.recurrent_dropout.count[...] == 1 and ys.shape == (B, T, H)
  key = nnx.Rngs(0, recurrent_dropout=1).recurrent_dropout()  # the key the call drew
  S = 2 * H
  m = jax.random.bernoulli(key, 1 - rate, (1 if broadcast else T, B, S)) / (1 - rate)
  m = jnp.broadcast_to(m, (T, B, S)).astype(x.dtype)
  cell, params = rnn.to_layer()
  carry, want = cell.initial_carry((B,), x.dtype), []
  for t in range(T):
    carry, y = cell.step(params, carry, x[:, t])
    s = jnp.concatenate([carry.h, carry.c], -1) * m[t]
    carry = rj.LSTMCarry(s[:, :H], s[:, H:])
    want.append(y)
  np.testing.assert_allclose(ys, jnp.stack(want, 1), rtol=1e-10)
  assert not np.allclose(rnn(x), ys)  # a fresh mask on the next call
  rnn.eval()
  np.testing.assert_allclose(rnn(x), rj.scan(cell, params, x, time_major=False)[1], rtol=1e-12)


def test_closed_over_in_plain_jax_transforms():
  """The module captured (not passed) by jax.grad/jax.jit; with dropout, the call's
  rngs= supplies the masks (flax 0.12.8's own nnx.RNN raises TraceContextError here)."""
  rnn = rnx.RNN(rj.gru(H), I, rngs=nnx.Rngs(0))
  g = jax.grad(lambda x: rnn(x).sum())(inputs())
  assert g.shape == (B, T, I)
  drop = rnx.RNN(rj.gru(H), I, rngs=nnx.Rngs(0), dropout_rate=0.5, zoneout_rate=0.2)
  with pytest.raises(ValueError, match=r"pass rngs=nnx.Rngs\(key\).*to the call"):
    jax.grad(lambda x: drop(x).sum())(inputs())
  g = jax.jit(jax.grad(lambda x, k: drop(x, rngs=k).sum()))(inputs(), jax.random.key(3))
  assert g.shape == (B, T, I) and float(jnp.abs(g).max()) > 0


def test_bidirectional_of_cells_fails_with_the_fix():
  with pytest.raises(TypeError, match=r"takes two RNN modules.*rnnjax.nnx.RNN\(cell_f, I"):
    rnx.Bidirectional(rj.gru(H), rj.gru(H))

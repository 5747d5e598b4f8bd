"""Recurrent regularisers: each one's defining property and its expectation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import assert_trees_close, f64


def test_locked_dropout_mask_is_the_same_at_every_step():
  xs = jax.random.normal(jax.random.key(0), (6, 64, 32), jnp.float64) + 3.0  # never 0
  ys = rj.locked_dropout(jax.random.key(1), xs, 0.25)
  kept = np.asarray(ys != 0)  # [T, B, F]
  assert np.all(kept == kept[0])  # one mask per sequence
  np.testing.assert_allclose(np.asarray(ys)[kept], np.asarray(xs / 0.75)[kept], rtol=1e-14)
  assert abs(1 - kept[0].mean() - 0.25) < 0.03  # drop frequency ≈ rate
  batch_major = rj.locked_dropout(jax.random.key(1), jnp.swapaxes(xs, 0, 1), 0.25, time_major=False)
  np.testing.assert_array_equal(batch_major, jnp.swapaxes(ys, 0, 1))


def test_locked_dropout_expectation_and_evaluation():
  xs = jnp.ones((3, 4, 5))
  mean = jnp.mean(jnp.stack([rj.locked_dropout(jax.random.key(k), xs, 0.5) for k in range(400)]), 0)
  assert abs(float(mean.mean()) - 1.0) < 0.02  # E[mask / (1 - p)] = 1
  assert rj.locked_dropout(None, xs, 0.0) is xs  # the identity at evaluation
  with pytest.raises(ValueError, match=r"rate must lie in \[0, 1\), got 1.0"):
    rj.locked_dropout(jax.random.key(0), xs, 1.0)
  with pytest.raises(ValueError, match=r"rate > 0 needs key"):
    rj.locked_dropout(None, xs, 0.1)


def test_weight_drop_masks_w_h_once_and_bptt_gives_autodiff_gradients():
  cell = rj.gru(6, reset="after")
  p = f64(cell.init(jax.random.key(0), 3))
  xs = jax.random.normal(jax.random.key(1), (7, 2, 3), jnp.float64)

  def loss(p, backward):
    dropped = rj.weight_drop(jax.random.key(2), p, 0.3)  # one mask for the whole pass
    return jnp.sum(rj.scan(cell, dropped, xs, backward=backward)[1] ** 2)

  g_bptt = jax.grad(loss)(p, "bptt")
  assert_trees_close(g_bptt, jax.grad(loss)(p, "autodiff"))
  q = rj.weight_drop(jax.random.key(2), p, 0.3)
  dropped = np.asarray(q.w_h == 0)
  assert 0.2 < dropped.mean() < 0.4
  np.testing.assert_array_equal(np.asarray(g_bptt.w_h)[dropped], 0.0)  # no gradient there
  np.testing.assert_allclose(np.asarray(q.w_h)[~dropped], np.asarray(p.w_h / 0.7)[~dropped])
  assert_trees_close(q._replace(w_h=p.w_h), p)  # only w_h changes


def test_weight_drop_expectation_and_errors():
  p = rj.elman(8).init(jax.random.key(0), 2)
  mean = jnp.mean(jnp.stack([rj.weight_drop(jax.random.key(k), p, 0.5).w_h for k in range(400)]), 0)
  np.testing.assert_allclose(mean, p.w_h, atol=0.2 * float(jnp.abs(p.w_h).max()))
  assert rj.weight_drop(None, p, 0.0) is p
  with pytest.raises(ValueError, match=r"have no field 'w_hh'"):
    rj.weight_drop(jax.random.key(0), p, 0.5, field="w_hh")


def test_zoneout_holds_units_with_frequency_rate():
  cell = rj.zoneout(rj.lstm(8))
  xs = jax.random.normal(jax.random.key(0), (10, 16, 3), jnp.float64)
  xm = rj.zoneout_inputs(jax.random.key(1), xs, cell, 0.3)
  p = f64(cell.init(jax.random.key(2), xm.shape[-1]))
  assert type(p).__name__ == "ZoneoutParams" and isinstance(p.cell, rj.LSTMParams)
  prev, held, total = cell.initial_carry((16,), jnp.float64), 0, 0
  for t in range(10):
    new, _ = cell.step(p, prev, xm[t])
    s_prev = jnp.concatenate([prev.h, prev.c], -1)
    s_new = jnp.concatenate([new.h, new.c], -1)
    m = np.asarray(xm[t, :, 3:]) == 1
    np.testing.assert_array_equal(np.asarray(s_new)[m], np.asarray(s_prev)[m])  # kept
    plain, _ = rj.lstm(8).step(p.cell, prev, xs[t])
    s_plain = np.asarray(jnp.concatenate([plain.h, plain.c], -1))
    np.testing.assert_allclose(np.asarray(s_new)[~m], s_plain[~m], rtol=1e-12)  # updated
    held, total = held + m.sum(), total + m.size
    prev = new
  assert abs(held / total - 0.3) < 0.03


def test_zoneout_evaluation_is_the_expectation_and_bptt_equals_autodiff():
  cell = rj.zoneout(rj.gru(4))
  xs = jax.random.normal(jax.random.key(0), (6, 2, 3), jnp.float64)
  xm = rj.zoneout_inputs(None, xs, cell, 0.25)  # evaluation: m = rate
  p = f64(cell.init(jax.random.key(1), xm.shape[-1]))
  _, ys = rj.scan(cell, p, xm)
  h, ref = jnp.zeros((2, 4)), []
  for t in range(6):
    h = 0.25 * h + 0.75 * rj.gru(4).step(p.cell, h, xs[t])[0]  # E[s_t] given s_{t-1}
    ref.append(h)
  np.testing.assert_allclose(ys, jnp.stack(ref), rtol=1e-12)
  train = rj.zoneout_inputs(jax.random.key(2), xs, cell, 0.25)

  def loss(p, backward):
    return jnp.sum(rj.scan(cell, p, train, lengths=jnp.array([6, 3]), backward=backward)[1] ** 2)

  assert_trees_close(jax.grad(loss)(p, "bptt"), jax.grad(loss)(p, "autodiff"))

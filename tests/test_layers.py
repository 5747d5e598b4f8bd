"""Deep, bidirectional, residual, dropout and embedding layers against plain compositions."""

import itertools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import assert_trees_close, f64, loop_reference

T, B, I, H = 6, 3, 4, 5
LENGTHS = jnp.array([6, 4, 1])


def test_stacked_equals_chained_scans(key):
  cells = [rj.lstm(H), rj.gru(H), rj.elman(H)]
  layers = [(c, f64(p)) for c, p in rj.init_stacked(key, cells, I)]
  xs = jax.random.normal(key, (T, B, I))
  carries, ys = rj.stacked(layers, xs, lengths=LENGTHS)
  h = xs
  for (cell, p), carry in zip(layers, carries, strict=True):
    ref_c, h = loop_reference(cell, p, h, cell.initial_carry((B,), jnp.float64), LENGTHS)
    assert_trees_close(carry, ref_c, rtol=1e-12)
  np.testing.assert_allclose(ys, h, rtol=1e-12)


def test_residual_and_dropout(key):
  cells = [rj.gru(H), rj.gru(H)]
  layers = [(c, f64(p)) for c, p in rj.init_stacked(key, cells, I)]
  xs = jax.random.normal(key, (T, B, I))
  _, ys = rj.stacked(layers, xs, residual=True)
  _, h1 = rj.scan(*layers[0], xs)
  _, h2 = rj.scan(*layers[1], h1)
  np.testing.assert_allclose(ys, h2 + h1, rtol=1e-12)
  # dropout between layers: same key, same mask; zeros appear in the layer-2 input
  k = jax.random.key(3)
  _, yd = rj.stacked(layers, xs, dropout_rate=0.5, key=k)
  mask_in = rj.dropout(jax.random.split(k, 2)[0], h1, 0.5)
  _, ref = rj.scan(*layers[1], mask_in)
  np.testing.assert_allclose(yd, ref, rtol=1e-12)
  assert 0.3 < float(jnp.mean(mask_in == 0)) < 0.7
  with pytest.raises(ValueError, match=r"dropout_rate > 0 needs key=...; pass dropout_rate=0.0"):
    rj.stacked(layers, xs, dropout_rate=0.1)
  bad = rj.init_stacked(key, [rj.gru(H), rj.gru(7)], I)
  with pytest.raises(
    ValueError,
    match=r"residual connection at layer 1 needs equal input and "
    r"output shapes, got \(6, 3, 5\) -> \(6, 3, 7\)",
  ):
    rj.stacked(bad, xs, residual=True)


def test_stacked_step_over_T_steps_equals_stacked(key):
  cells = [rj.lstm(H), rj.gru(H, reset="after"), rj.elman(3)]
  layers = [(c, f64(p)) for c, p in rj.init_stacked(key, cells, I)]
  xs = jax.random.normal(jax.random.key(1), (T, B, I))
  c0 = [
    jax.tree.map(lambda c, l=l: c + 0.1 * (l + 1), cell.initial_carry((B,), jnp.float64))
    for l, (cell, _) in enumerate(layers)
  ]
  ref_carries, ref_ys = rj.stacked(layers, xs, c0)
  carries, ys = c0, []
  for t in range(T):
    carries, y = rj.stacked_step(layers, carries, xs[t])
    ys.append(y)
  chex.assert_shape(ys, (B, 3))
  assert_trees_close(carries, ref_carries, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(jnp.stack(ys), ref_ys, rtol=1e-12, atol=1e-14)
  with pytest.raises(ValueError, match=r"got 2 carries for 3 layers; pass \[cell.initial_carry"):
    rj.stacked_step(layers, c0[:2], xs[0])


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_bidirectional_over_padded_batch(merge, key):
  cell = rj.lstm(H)
  kf, kb = jax.random.split(key)
  fwd, bwd = (cell, f64(cell.init(kf, I))), (cell, f64(cell.init(kb, I)))
  xs = jax.random.normal(key, (T, B, I))
  (cf, cb), ys = rj.bidirectional(fwd, bwd, xs, lengths=LENGTHS, merge=merge)
  c0 = cell.initial_carry((B,), jnp.float64)
  ref_cf, yf = loop_reference(cell, fwd[1], xs, c0, LENGTHS)
  ref_cb, yb = loop_reference(cell, bwd[1], xs, c0, LENGTHS, reverse=True)
  expect = jnp.concatenate([yf, yb], -1) if merge == "concat" else yf + yb
  np.testing.assert_allclose(ys, expect, rtol=1e-12)
  assert_trees_close((cf, cb), (ref_cf, ref_cb), rtol=1e-12)
  with pytest.raises(ValueError, match=r"unknown merge 'max'"):
    rj.bidirectional(fwd, bwd, xs, merge="max")


def test_stacked_bidirectional_gradients_flow(key):
  layers = rj.init_stacked(key, [rj.gru(H), rj.lstm(H)], I, bidirectional=True)
  xs = jax.random.normal(key, (T, B, I), jnp.float32)
  cells = [((f[0], b[0])) for f, b in layers]
  params = [(f[1], b[1]) for f, b in layers]

  def loss(params, x, backward):
    L = [((cf, pf), (cb, pb)) for (cf, cb), (pf, pb) in zip(cells, params, strict=True)]
    return jnp.sum(rj.stacked(L, x, lengths=LENGTHS, backward=backward)[1] ** 2)

  _, ys = rj.stacked(layers, xs, lengths=LENGTHS)
  chex.assert_shape(ys, (T, B, 2 * H))
  params64, xs64 = f64(params), xs.astype(jnp.float64)
  g_bptt = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(params64, xs64, "bptt")
  g_ad = jax.jit(jax.grad(loss, (0, 1)), static_argnums=2)(params64, xs64, "autodiff")
  assert_trees_close(g_bptt, g_ad, rtol=1e-10, atol=1e-12)
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(g_bptt))


def test_stacked_bidirectional_resets_equal_separate_episodes(key):
  """resets reach every scan of every layer, both directions: each episode
  runs as if alone (the backward direction starts at each episode's end)."""
  layers = [
    ((c, f64(pf)), (c, f64(pb)))
    for (c, pf), (_, pb) in rj.init_stacked(key, [rj.gru(3), rj.lstm(2)], 2, bidirectional=True)
  ]
  xs = jax.random.normal(jax.random.key(1), (6, 2, 2))
  starts = [[0, 2, 5], [0, 3]]  # episode starts of sequence 0 and 1
  resets = np.zeros((6, 2), bool)
  for b, ss in enumerate(starts):
    resets[ss[1:], b] = True
  carries, ys = rj.stacked(layers, xs, resets=jnp.asarray(resets))
  chex.assert_shape(ys, (6, 2, 4))
  for b, ss in enumerate(starts):
    bounds = [*ss, 6]
    mine = jax.tree.map(lambda a, b=b: a[b : b + 1], carries)
    for s, e in itertools.pairwise(bounds):
      ep_carries, ep_ys = rj.stacked(layers, xs[s:e, b : b + 1])
      np.testing.assert_allclose(ys[s:e, b : b + 1], ep_ys, rtol=1e-12, atol=1e-14)
      for (cf, cb), (ef, eb) in zip(mine, ep_carries, strict=True):
        if e == 6:  # the forward carry is the last episode's
          assert_trees_close(cf, ef, rtol=1e-12, atol=1e-14)
        if s == 0:  # the backward carry is the first episode's
          assert_trees_close(cb, eb, rtol=1e-12, atol=1e-14)


def test_embedding(key):
  emb = rj.embedding(10, 3)
  p = emb.init(key)
  ids = jnp.array([[1, 2], [9, 1]])
  out = emb.apply(p, ids)
  chex.assert_shape(out, (2, 2, 3))
  np.testing.assert_array_equal(out[1, 1], p.table[1])
  # the gradient is a scatter-add into the used rows (one-hot times E)
  g = jax.grad(lambda P: jnp.sum(emb.apply(P, ids)))(p).table
  np.testing.assert_array_equal(np.asarray(g)[:, 0], [0, 2, 1, 0, 0, 0, 0, 0, 0, 1])
  with pytest.raises(TypeError, match=r"ids must be integers, got dtype float32"):
    emb.apply(p, jnp.zeros((2,), jnp.float32))
  with pytest.raises(ValueError, match=r"ids must lie in \[0, V=10\), got min 0 and max 10"):
    emb.apply(p, jnp.array([0, 10]))

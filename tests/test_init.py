"""Initialisers: the properties each is chosen for."""

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

H = 64


def test_default_recurrent_blocks_are_orthogonal(key):
  for cell, k in [(rj.elman(H), 1), (rj.gru(H), 3), (rj.lstm(H), 4)]:
    w = np.asarray(cell.init(key, 8).w_h, np.float64)
    for j in range(k):
      blk = w[:, j * H : (j + 1) * H]
      np.testing.assert_allclose(blk.T @ blk, np.eye(H), atol=1e-5)
    if k > 1:  # blocks are independent draws
      assert np.max(np.abs(w[:, :H] - w[:, H : 2 * H])) > 0.1


def test_identity_and_gaussian_gain(key):
  cell = rj.elman(H, "relu", recurrent_init=rj.init.identity(0.5))
  np.testing.assert_array_equal(cell.init(key, 3).w_h, 0.5 * np.eye(H))
  with pytest.raises(ValueError, match=r"identity init needs a square \[H, H\] shape"):
    rj.init.identity()(key, (3, 4))
  # W_ij ~ N(0, g²/N): entry variance g²/N and spectral radius ≈ g for large N
  N, g = 400, 1.7
  w = np.asarray(rj.init.gaussian(g)(key, (N, N), jnp.float64))
  assert abs(w.var() * N / g**2 - 1) < 0.02
  assert abs(np.max(np.abs(np.linalg.eigvals(w))) / g - 1) < 0.08


def test_forget_bias_and_chrono(key):
  b = rj.lstm(H).init(key, 3).b
  np.testing.assert_array_equal(b[H : 2 * H], 1.0)
  np.testing.assert_array_equal(b[:H], 0.0)
  np.testing.assert_array_equal(rj.lstm(H, forget_bias=0.0).init(key, 3).b, 0.0)
  b = rj.lstm(H, chrono_t_max=100).init(key, 3).b
  bf = np.asarray(b[H : 2 * H])
  assert np.all(bf >= 0) and np.all(bf <= np.log(99) + 1e-6) and bf.std() > 0.5
  np.testing.assert_array_equal(b[:H], -bf)
  bz = np.asarray(rj.gru(H, chrono_t_max=50).init(key, 3).b[H : 2 * H])
  assert np.all(bz >= 0) and np.all(bz <= np.log(49) + 1e-6)
  with pytest.raises(ValueError, match=r"chrono initialisation needs t_max > 2, got 1"):
    rj.lstm(H, chrono_t_max=1).init(key, 3)


def test_input_init_glorot(key):
  cell = rj.gru(H, input_init=rj.init.glorot_uniform())
  w = np.asarray(cell.init(key, 32).w_x)
  limit = np.sqrt(6 / (32 + 3 * H))
  assert np.max(np.abs(w)) <= limit and np.max(np.abs(w)) > 0.9 * limit

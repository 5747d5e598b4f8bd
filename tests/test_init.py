"""Initialisers: the properties each is chosen for."""

import jax
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


# the factories whose recurrent init goes through the orthogonal QR or conv kernels, built small
HALF_CELLS = {
  "cifg_lstm": lambda dt: rj.cifg_lstm(4, param_dtype=dt),
  "conv_lstm": lambda dt: rj.conv_lstm(2, 3, (2, 2), param_dtype=dt),
  "elman": lambda dt: rj.elman(4, param_dtype=dt),
  "gru": lambda dt: rj.gru(4, param_dtype=dt),
  "lstm": lambda dt: rj.lstm(4, param_dtype=dt),
  "lstm_chrono": lambda dt: rj.lstm(4, chrono_t_max=20, param_dtype=dt),
  "lstm_projected": lambda dt: rj.lstm_projected(4, proj_size=2, param_dtype=dt),
  "mgu": lambda dt: rj.mgu(4, param_dtype=dt),
  "peephole_lstm": lambda dt: rj.peephole_lstm(4, param_dtype=dt),
}


def _check_half(names, dtype, key):
  for name in names:
    make = HALF_CELLS[name]
    half, full = make(dtype).init(key, 12), make(jnp.float32).init(key, 12)
    paths = jax.tree_util.tree_flatten_with_path(full)[0]
    for (path, f), h in zip(paths, jax.tree.leaves(half), strict=True):
      if f.dtype != jnp.float32:
        continue
      assert h.dtype == dtype, (name, path)
      want = np.asarray(f.astype(dtype), np.float32)  # float32's draw, rounded once
      np.testing.assert_array_equal(np.asarray(h, np.float32), want, err_msg=f"{name}{path}")


def test_every_cell_initialises_in_bfloat16(key):
  # jax's QR has no half-precision kernel on CPU: the initialisers draw in float32, then cast
  _check_half(sorted(HALF_CELLS), jnp.bfloat16, key)


def test_gated_cells_initialise_in_float16(key):
  _check_half(["elman", "gru", "lstm"], jnp.float16, key)


def test_half_precision_recurrent_blocks_stay_orthogonal(key):
  w = np.asarray(rj.lstm(8, param_dtype=jnp.bfloat16).init(key, 3).w_h, np.float64)
  for j in range(4):
    blk = w[:, j * 8 : (j + 1) * 8]
    np.testing.assert_allclose(blk.T @ blk, np.eye(8), atol=2e-2)  # bfloat16 keeps 8 bits
  # a user's own jax initialiser goes through blockwise in float32 too
  init = rj.init.blockwise(jax.nn.initializers.orthogonal(), 2)
  assert init(key, (4, 8), jnp.float16).dtype == jnp.float16
  # other dtypes are untouched: float64 stays a float64 draw
  assert rj.init.orthogonal()(key, (3, 3), jnp.float64).dtype == jnp.float64

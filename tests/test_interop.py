"""PyTorch layers map onto rnnjax params by the documented transposes.

PyTorch is an optional extra, so the tests against torch modules run only where
it is installed (`pip install torch==2.13.0`); the NumPy state-dict tests run
everywhere. The flax mapping is tested in test_cells.py."""

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import interop

try:
  import torch
except ImportError:
  torch = None

needs_torch = pytest.mark.skipif(
  torch is None, reason="PyTorch is an optional extra (pip install torch==2.13.0)"
)


def _sigmoid(z):
  return 1.0 / (1.0 + np.exp(-z))


def _torch_lstm_proj_reference(state, sfx, xs):
  """torch's LSTM-with-projection equations, column vectors, NumPy float64."""
  w_ih, w_hh, w_hr = (state[f"{n}{sfx}"] for n in ("weight_ih", "weight_hh", "weight_hr"))
  b_ih, b_hh = state[f"bias_ih{sfx}"], state[f"bias_hh{sfx}"]
  H, P = w_hr.shape[1], w_hr.shape[0]
  h, c, ys = np.zeros((xs.shape[1], P)), np.zeros((xs.shape[1], H)), []
  for x in xs:
    z = x @ w_ih.T + b_ih + h @ w_hh.T + b_hh  # [B, 4H]
    i, f, g, o = (z[:, k * H : (k + 1) * H] for k in range(4))
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    h = (_sigmoid(o) * np.tanh(c)) @ w_hr.T  # h = W_hr (o ⊙ tanh c)
    ys.append(h)
  return h, c, np.stack(ys)


def test_from_torch_projected_lstm_numpy_state():
  """Without torch: a NumPy state dict of nn.LSTM(proj_size=P)'s keys."""
  I, H, P, T, B = 3, 4, 2, 5, 2
  rng = np.random.default_rng(0)
  sfx = "_l1_reverse"
  shapes = {"weight_ih": (4 * H, I), "weight_hh": (4 * H, P), "weight_hr": (P, H)}
  shapes |= {"bias_ih": (4 * H,), "bias_hh": (4 * H,)}
  state = {f"{n}{sfx}": rng.normal(size=s) for n, s in shapes.items()}
  p = interop.from_torch("lstm", state, layer=1, suffix="_reverse", dtype=jnp.float64)
  assert isinstance(p, rj.LSTMProjectedParams)
  np.testing.assert_array_equal(p.w_x, state[f"weight_ih{sfx}"].T)
  np.testing.assert_array_equal(p.w_h, state[f"weight_hh{sfx}"].T)
  np.testing.assert_array_equal(p.w_r, state[f"weight_hr{sfx}"].T)
  np.testing.assert_allclose(p.b, state[f"bias_ih{sfx}"] + state[f"bias_hh{sfx}"], rtol=1e-15)
  xs = rng.normal(size=(T, B, I))
  carry, ys = rj.scan(rj.lstm_projected(H, proj_size=P), p, jnp.asarray(xs))
  h, c, ref = _torch_lstm_proj_reference(state, sfx, xs)
  np.testing.assert_allclose(ys, ref, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(carry.h, h, rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(carry.c, c, rtol=1e-12, atol=1e-14)
  with pytest.raises(ValueError, match=r"weight_hr_l1_reverse .* needs kind='lstm', got 'gru'"):
    interop.from_torch("gru", state, layer=1, suffix="_reverse")


@needs_torch
@pytest.mark.parametrize(
  ("kind", "module", "cell"),
  [
    ("elman", "RNN", rj.elman(6)),
    ("gru", "GRU", rj.gru(6, reset="after")),
    ("lstm", "LSTM", rj.lstm(6)),
  ],
)
def test_torch_layer_equals_rnnjax(kind, module, cell):
  torch.manual_seed(0)
  m = getattr(torch.nn, module)(4, 6, bidirectional=True).double()
  x = torch.randn(9, 3, 4, dtype=torch.float64)
  y_t, _ = m(x)
  state = m.state_dict()
  fwd = interop.from_torch(kind, state, dtype=jnp.float64)
  bwd = interop.from_torch(kind, state, suffix="_reverse", dtype=jnp.float64)
  _, ys = rj.bidirectional((cell, fwd), (cell, bwd), jnp.asarray(x.numpy()))
  np.testing.assert_allclose(ys, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)


@needs_torch
def test_torch_projected_lstm_equals_rnnjax():
  torch.manual_seed(0)
  m = torch.nn.LSTM(4, 6, proj_size=3, bidirectional=True).double()
  x = torch.randn(9, 3, 4, dtype=torch.float64)
  y_t, (h_t, c_t) = m(x)
  state = m.state_dict()
  cell = rj.lstm_projected(6, proj_size=3)
  fwd = interop.from_torch("lstm", state, dtype=jnp.float64)
  bwd = interop.from_torch("lstm", state, suffix="_reverse", dtype=jnp.float64)
  (cf, cb), ys = rj.bidirectional((cell, fwd), (cell, bwd), jnp.asarray(x.numpy()))
  np.testing.assert_allclose(ys, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(cf.h, h_t[0].detach().numpy(), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(cb.c, c_t[1].detach().numpy(), rtol=1e-10, atol=1e-12)


@needs_torch
def test_from_torch_errors():
  with pytest.raises(ValueError, match=r"unknown kind 'rnn'"):
    interop.from_torch("rnn", {})
  with pytest.raises(ValueError, match=r"state has no \['weight_ih_l1', 'weight_hh_l1'\]"):
    interop.from_torch("lstm", torch.nn.LSTM(2, 3).state_dict(), layer=1)

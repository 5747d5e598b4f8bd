"""PyTorch layers map onto rnnjax params by the documented transposes.

PyTorch is an optional extra, so these tests run only where it is installed
(`pip install torch==2.13.0`); the flax mapping is tested in test_cells.py."""

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import interop

torch = pytest.importorskip(
  "torch", reason="PyTorch is an optional extra (pip install torch==2.13.0)"
)


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


def test_from_torch_errors():
  with pytest.raises(ValueError, match=r"unknown kind 'rnn'"):
    interop.from_torch("rnn", {})
  with pytest.raises(ValueError, match=r"state has no \['weight_ih_l1', 'weight_hh_l1'\]"):
    interop.from_torch("lstm", torch.nn.LSTM(2, 3).state_dict(), layer=1)

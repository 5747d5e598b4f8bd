"""PyTorch's RNN semantics, held by rnnjax layers with the same weights: nn.RNN
(tanh, relu), nn.GRU and nn.LSTM (with proj_size); one or two layers, one or both
directions; batch_first and time-major; packed sequences against ``lengths``; zero
and given initial states in PyTorch's h0/c0 layout (through
``rj.interop.carries_from_torch``); the final states back in PyTorch's layout
(``carries_to_torch``); and the weights written back with ``load_state_dict(strict=True)``.

PyTorch is an optional extra: without it this module is skipped.
"""

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import interop

torch = pytest.importorskip("torch", reason="PyTorch is an optional extra (pip install torch)")

T, B, I, H = 5, 3, 2, 4
CASES = [  # (module, kind, kwargs)
  ("RNN", "elman", dict(nonlinearity="tanh", num_layers=2, bidirectional=True)),
  ("RNN", "elman", dict(nonlinearity="relu", batch_first=True)),
  ("GRU", "gru", dict(num_layers=2, batch_first=True)),
  ("GRU", "gru", dict(bidirectional=True)),
  ("LSTM", "lstm", dict(num_layers=2, bidirectional=True, batch_first=True)),
  ("LSTM", "lstm", dict(proj_size=3, num_layers=2)),
]


def _module(name, kw, seed=0):
  torch.manual_seed(seed)
  return getattr(torch.nn, name)(I, H, **kw).double()


def _run(module, name, kind, kw, x, h0):
  """rnnjax's run of ``module``'s weights: (ys, final states in PyTorch's layout)."""
  layers = interop.from_torch(kind, module.state_dict(), dtype=jnp.float64, **_nl(kw))
  carries = None if h0 is None else interop.carries_from_torch(layers, *h0)
  bf = kw.get("batch_first", False)
  finals, ys = rj.stacked(layers, jnp.asarray(x.numpy()), carries, time_major=not bf)
  return ys, interop.carries_to_torch(finals)


def _close(got, want):
  if isinstance(want, tuple):  # (h_n, c_n): h_n is [.., P] with a projection
    for g, w in zip(got, want, strict=True):
      np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
  else:
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def _nl(kw):
  return {"nonlinearity": kw["nonlinearity"]} if "nonlinearity" in kw else {}


def _state0(name, kw, seed):
  D = 2 if kw.get("bidirectional") else 1
  L = kw.get("num_layers", 1)
  g = torch.Generator().manual_seed(seed)
  h = torch.randn(L * D, B, kw.get("proj_size") or H, generator=g, dtype=torch.float64)
  if name == "LSTM":
    return (h, torch.randn(L * D, B, H, generator=g, dtype=torch.float64))
  return (h,)


@pytest.mark.parametrize(("name", "kind", "kw"), CASES, ids=lambda c: str(c))
@pytest.mark.parametrize("given_state", [False, True], ids=["zero_state", "given_state"])
def test_outputs_and_final_states_equal_torch(name, kind, kw, given_state):
  m = _module(name, kw)
  shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
  x = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
  h0 = _state0(name, kw, seed=2) if given_state else None
  with torch.no_grad():
    y_t, s_t = m(x) if h0 is None else m(x, h0 if name == "LSTM" else h0[0])
  ys, finals = _run(m, name, kind, kw, x, h0)
  np.testing.assert_allclose(ys, y_t.numpy(), rtol=1e-10, atol=1e-12)
  want = tuple(s.numpy() for s in s_t) if name == "LSTM" else s_t.numpy()
  _close(finals, want)


@pytest.mark.parametrize(("name", "kind"), [("LSTM", "lstm"), ("GRU", "gru")])
def test_packed_sequences_equal_lengths(name, kind):
  """pack_padded_sequence: torch's padded outputs are zeros past each length, as
  rnnjax's; h_n is each sequence's last valid state, both directions."""
  kw = dict(bidirectional=True, batch_first=True)
  m = _module(name, kw)
  x = torch.randn(B, T, I, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
  lengths = torch.tensor([T, 2, 4])
  packed = torch.nn.utils.rnn.pack_padded_sequence(
    x, lengths, batch_first=True, enforce_sorted=False
  )
  with torch.no_grad():
    out, s_t = m(packed)
  y_t, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
  layers = interop.from_torch(kind, m.state_dict(), dtype=jnp.float64)
  finals, ys = rj.stacked(
    layers, jnp.asarray(x.numpy()), lengths=jnp.asarray(lengths.numpy()), time_major=False
  )
  np.testing.assert_allclose(ys, y_t.numpy(), rtol=1e-10, atol=1e-12)
  want = tuple(s.numpy() for s in s_t) if name == "LSTM" else s_t.numpy()
  _close(interop.carries_to_torch(finals), want)


def test_single_layer_state_layout_for_scan():
  """One layer: PyTorch's [1, B, H] h0 for rj.scan, and h_n back."""
  m = _module("GRU", {})
  x = torch.randn(T, B, I, dtype=torch.float64)
  h0 = torch.randn(1, B, H, dtype=torch.float64)
  with torch.no_grad():
    y_t, h_t = m(x, h0)
  [layer] = interop.from_torch("gru", m.state_dict(), dtype=jnp.float64)
  carry, ys = rj.scan(*layer, jnp.asarray(x.numpy()), interop.carries_from_torch(layer, h0))
  np.testing.assert_allclose(ys, y_t.numpy(), rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(interop.carries_to_torch(carry), h_t.numpy(), rtol=1e-10)


@pytest.mark.parametrize(("name", "kind", "kw"), [CASES[1], CASES[4], CASES[5]], ids=str)
def test_weights_load_back_strictly(name, kind, kw):
  """rnnjax -> PyTorch: to_torch's state dict loads with strict=True into a fresh
  module, which then computes what rnnjax computes."""
  layers = interop.from_torch(kind, _module(name, kw).state_dict(), dtype=jnp.float64, **_nl(kw))
  fresh = _module(name, kw, seed=1)
  fresh.load_state_dict(
    {k: torch.from_numpy(np.asarray(v)) for k, v in interop.to_torch(layers).items()}, strict=True
  )
  shape = (B, T, I) if kw.get("batch_first") else (T, B, I)
  x = torch.randn(*shape, dtype=torch.float64)
  with torch.no_grad():
    y_t, _ = fresh(x)
  ys, _ = _run(fresh, name, kind, kw, x, None)
  np.testing.assert_allclose(ys, y_t.numpy(), rtol=1e-10, atol=1e-12)
  _, ys_ours = rj.stacked(layers, jnp.asarray(x.numpy()), time_major=not kw.get("batch_first"))
  np.testing.assert_allclose(ys_ours, y_t.numpy(), rtol=1e-10, atol=1e-12)

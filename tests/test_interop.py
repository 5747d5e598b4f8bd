"""PyTorch layers map onto rnnjax params by the documented transposes.

PyTorch is an optional extra, so the tests against torch modules run only where
it is installed (`pip install torch==2.13.0`); the NumPy state-dict tests run
everywhere. The flax mapping is tested in test_cells.py."""

import chex
import jax
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
  fwd = interop.from_torch(kind, state, layer=0, dtype=jnp.float64)
  bwd = interop.from_torch(kind, state, layer=0, suffix="_reverse", dtype=jnp.float64)
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
  fwd = interop.from_torch("lstm", state, layer=0, dtype=jnp.float64)
  bwd = interop.from_torch("lstm", state, layer=0, suffix="_reverse", dtype=jnp.float64)
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


# ------------------------------------------------------------ whole stacks, both ways

I2, H2, P2, T2, B2 = 3, 4, 2, 4, 2
TORCH_CELLS = {
  "elman": rj.elman(H2, "relu"),
  "gru": rj.gru(H2, reset="after"),
  "lstm": rj.lstm(H2),
  "lstm_proj": rj.lstm_projected(H2, proj_size=P2),
}


def _random_params(cell, input_size, rng):
  """float64 params of ``cell.init``'s shapes (``jax.eval_shape``: no initialiser
  runs), N(0, 0.5²) entries."""
  shapes = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.key(0))
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape)), shapes)


def _stack(cell, num_layers=2, bidirectional=True, seed=0):
  """rj.stacked layers as nn.RNN/GRU/LSTM(num_layers, bidirectional) holds them."""
  rng, layers, size = np.random.default_rng(seed), [], I2
  for _ in range(num_layers):
    if bidirectional:
      layers.append(tuple((cell, _random_params(cell, size, rng)) for _ in range(2)))
    else:
      layers.append((cell, _random_params(cell, size, rng)))
    size = cell.hidden_size * (2 if bidirectional else 1)
  return layers


def _torch_keys(num_layers, bidirectional, proj):
  names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] + (["weight_hr"] if proj else [])
  sfxs = ["", "_reverse"] if bidirectional else [""]
  return [f"{n}_l{l}{s}" for l in range(num_layers) for s in sfxs for n in names]


def _kind(name):
  return "lstm" if name.startswith("lstm") else name


@pytest.mark.parametrize("name", sorted(TORCH_CELLS))
def test_to_torch_then_from_torch_is_exact(name):
  """rnnjax -> PyTorch -> rnnjax gives back the very same params, bit for bit,
  under state_dict()'s keys in its order; no torch needed."""
  cell = TORCH_CELLS[name]
  layers = _stack(cell)
  state = interop.to_torch(layers)
  assert list(state) == _torch_keys(2, True, name == "lstm_proj")
  assert all(isinstance(a, np.ndarray) and a.flags.c_contiguous for a in state.values())
  assert state["weight_ih_l1_reverse"].shape == (len(_GATES_OF[name]) * H2, 2 * cell.hidden_size)
  back = interop.from_torch(_kind(name), state, layer=None, dtype=jnp.float64, nonlinearity="relu")
  assert [repr(c) for layer in back for c, _ in layer] == [repr(cell)] * 4
  chex.assert_trees_all_equal(
    [tuple(p for _, p in layer) for layer in back], [tuple(p for _, p in layer) for layer in layers]
  )
  # one unidirectional layer, given as a bare (cell, params) pair
  single = _stack(cell, num_layers=1, bidirectional=False)[0]
  state = interop.to_torch(single)
  assert list(state) == _torch_keys(1, False, name == "lstm_proj")
  chex.assert_trees_all_equal(
    interop.from_torch(_kind(name), state, layer=0, dtype=jnp.float64), single[1]
  )
  # by default from_torch reads the whole module: a one-layer list, not layer 0's params
  [(cell_back, params_back)] = interop.from_torch(
    _kind(name), state, dtype=jnp.float64, nonlinearity="relu"
  )
  assert repr(cell_back) == repr(cell)
  chex.assert_trees_all_equal(params_back, single[1])


_GATES_OF = {"elman": "h", "gru": "rzn", "lstm": "ifgo", "lstm_proj": "ifgo"}


def _torch_style_state(name, num_layers=2, bidirectional=True, seed=1):
  """A state dict with PyTorch's keys and shapes and independent b_ih, b_hh."""
  k, proj = len(_GATES_OF[name]), name == "lstm_proj"
  out, rng = (P2 if proj else H2), np.random.default_rng(seed)
  shapes = {"weight_hh": (k * H2, out), "bias_ih": (k * H2,), "bias_hh": (k * H2,)}
  if proj:
    shapes["weight_hr"] = (P2, H2)
  state = {}
  for key in _torch_keys(num_layers, bidirectional, proj):
    n, l = key.split("_l")[0], int(key.split("_l")[1][0])
    size = I2 if l == 0 else out * (2 if bidirectional else 1)
    state[key] = rng.normal(size=(k * H2, size) if n == "weight_ih" else shapes[n])
  return state


@pytest.mark.parametrize("name", sorted(TORCH_CELLS))
def test_from_torch_then_to_torch_keeps_weights_and_bias_sums(name):
  """PyTorch -> rnnjax -> PyTorch: every weight bit for bit; of the biases,
  rnnjax keeps what the module computes with: b_ih + b_hh (and the GRU's
  b_hh for the n gate, which r multiplies, apart)."""
  state = _torch_style_state(name)
  back = interop.to_torch(
    interop.from_torch(_kind(name), state, layer=None, dtype=jnp.float64, nonlinearity="relu")
  )
  assert list(back) == list(state)
  for key in state:
    if key.startswith("weight"):
      np.testing.assert_array_equal(back[key], state[key])
  for key in (k for k in state if k.startswith("bias_ih")):
    hh = key.replace("bias_ih", "bias_hh")
    np.testing.assert_array_equal(back[key] + back[hh], state[key] + state[hh])
    if name == "gru":
      np.testing.assert_array_equal(back[hh][2 * H2 :], state[hh][2 * H2 :])


def test_from_torch_errors_name_the_key_and_the_expected_shape():
  state = _torch_style_state("lstm")  # 2 layers, bidirectional, H = 4
  cases = [  # (key, its new value or None to drop it, the message)
    ("weight_hh_l1", None, r"state has no \['weight_hh_l1'\]; expected weight_hh_l1 \(16, 4\) = "
     r"\[4H, H\]"),
    ("weight_ih_l1_reverse", None, r"state has no \['weight_ih_l1_reverse'\]; expected "
     r"weight_ih_l1_reverse \(16, 8\) = \[4H, I\]"),
    ("weight_ih_l1", np.ones((16, 5)), r"weight_ih_l1 has shape \(16, 5\), expected weight_ih_l1 "
     r"\(16, 8\) = \[4H, I\]"),
    ("bias_hh_l0", np.ones(12), r"bias_hh_l0 has shape \(12,\), expected bias_hh_l0 \(16,\) = "
     r"\[4H\]"),
    ("bias_hh_l1", None, r"state has bias_ih_l1 but no bias_hh_l1; expected bias_hh_l1 \(16,\) = "
     r"\[4H\]"),
  ]  # fmt: skip
  for key, value, message in cases:
    broken = {k: v for k, v in state.items() if k != key}
    if value is not None:
      broken[key] = value
    with pytest.raises(ValueError, match=message):
      interop.from_torch("lstm", broken, layer=None)
  with pytest.raises(
    ValueError, match=r"a gru layer has 3 gate blocks: expected weight_ih_l0 \(3H, 3\) = \[3H, I\]"
  ):
    interop.from_torch("gru", state)
  with pytest.raises(ValueError, match=r"suffix='_reverse' picks one direction.*needs layer="):
    interop.from_torch("lstm", state, suffix="_reverse")
  proj = _torch_style_state("lstm_proj")
  del proj["weight_hr_l1"]
  with pytest.raises(
    ValueError, match=r"state has no weight_hr_l1; expected weight_hr_l1 \(2, 4\) = \[P, H\]"
  ):
    interop.from_torch("lstm", proj, layer=None)
  with pytest.raises(ValueError, match=r"strip a prefix such as 'rnn.'"):
    interop.from_torch("lstm", {f"rnn.{k}": v for k, v in state.items()}, layer=None)
  with pytest.raises(ValueError, match=r"nonlinearity must be one of \('tanh', 'relu'\)"):
    interop.from_torch("elman", state, layer=None, nonlinearity="sigmoid")


def test_to_torch_errors_name_the_layer():
  lstm, gru = _stack(rj.lstm(H2), 1, False)[0], _stack(rj.gru(H2, reset="after"), 1, False)[0]
  before = (rj.gru(H2), _random_params(rj.gru(H2), I2, np.random.default_rng(0)))
  with pytest.raises(
    ValueError, match=r"layer 0 is rnnjax.gru\(4, reset='before'\).*reset='after'"
  ):
    interop.to_torch(before)
  sigmoid = rj.elman(H2, "sigmoid")
  with pytest.raises(ValueError, match=r"activation 'sigmoid'; nn.RNN has nonlinearity 'tanh' or"):
    interop.to_torch((sigmoid, _random_params(sigmoid, I2, np.random.default_rng(0))))
  with pytest.raises(ValueError, match=r"layer 1 does not fit .* \(kind 'gru' vs 'lstm'\)"):
    interop.to_torch([lstm, (gru[0], _random_params(gru[0], H2, np.random.default_rng(0)))])
  bi = _stack(rj.lstm(H2), 1, True)[0]
  with pytest.raises(ValueError, match=r"layer 1 does not fit .* \(bidirectional True vs False\)"):
    interop.to_torch([lstm, bi])
  with pytest.raises(ValueError, match=r"layer 1 has w_x of shape \(3, 16\).* expects \(16, 4\)"):
    interop.to_torch([lstm, lstm])
  with pytest.raises(ValueError, match=r"ambiguous: pass \[\(\(cell, params_fwd\)"):
    interop.to_torch(tuple(bi))  # a bare bidirectional layer, I == H: not two layers
  mgu = rj.mgu(H2)
  with pytest.raises(TypeError, match=r"layer 0 has params MGUParams; PyTorch's layers are"):
    interop.to_torch((mgu, _random_params(mgu, I2, np.random.default_rng(0))))


@needs_torch
@pytest.mark.parametrize(
  ("name", "module", "kw"),
  [("elman", "RNN", {"nonlinearity": "relu"}), ("gru", "GRU", {}), ("lstm_proj", "LSTM", {})],
)
def test_torch_stack_both_ways(name, module, kw):
  """A 2-layer bidirectional torch module: from_torch(layer=None) runs in
  rj.stacked as torch runs it, and to_torch of those layers loads into a
  fresh module (strict=True) that computes the same outputs."""
  torch.manual_seed(0)
  make = getattr(torch.nn, module)
  torch_kw = kw | ({"proj_size": P2} if name == "lstm_proj" else {})
  m = make(I2, H2, num_layers=2, bidirectional=True, **torch_kw).double()
  x = torch.randn(T2, B2, I2, dtype=torch.float64)
  y_t, _ = m(x)
  layers = interop.from_torch(_kind(name), m.state_dict(), layer=None, dtype=jnp.float64, **kw)
  _, ys = rj.stacked(layers, jnp.asarray(x.numpy()))
  np.testing.assert_allclose(ys, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)

  state = interop.to_torch(layers)
  assert list(state) == list(m.state_dict())
  m2 = make(I2, H2, num_layers=2, bidirectional=True, **torch_kw).double()
  m2.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True)
  np.testing.assert_allclose(
    m2(x)[0].detach().numpy(), y_t.detach().numpy(), rtol=1e-10, atol=1e-12
  )


# ------------------------------------------------------------ flax NNX cells


@pytest.mark.parametrize(
  ("kind", "flax_cls", "cell"),
  [
    ("elman", "SimpleCell", rj.elman(H2)),
    ("gru", "GRUCell", rj.gru(H2, reset="after")),
    ("lstm", "LSTMCell", rj.lstm(H2)),
    ("lstm", "OptimizedLSTMCell", rj.lstm(H2)),
  ],
)
def test_from_flax_nnx_cells(kind, flax_cls, cell):
  """One step of each flax NNX cell equals rnnjax's with from_flax's params,
  read from nnx.state(cell, nnx.Param) and from its pure dict alike."""
  from flax import nnx

  abstract = nnx.eval_shape(
    lambda: getattr(nnx, flax_cls)(
      I2, H2, dtype=jnp.float64, param_dtype=jnp.float64, rngs=nnx.Rngs(0)
    )
  )
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(0)
  fcell = nnx.merge(graphdef, jax.tree.map(lambda s: 0.5 * rng.normal(size=s.shape), state))
  params = interop.from_flax(kind, nnx.state(fcell, nnx.Param))
  chex.assert_trees_all_equal(
    params, interop.from_flax(kind, nnx.to_pure_dict(nnx.state(fcell, nnx.Param)))
  )
  x, h, c = (jnp.asarray(rng.normal(size=(B2, n))) for n in (I2, H2, H2))
  if kind == "lstm":
    (fc, fh), fy = fcell((c, h), x)
    carry, y = cell.step(params, rj.LSTMCarry(h, c), x)
    chex.assert_trees_all_close((carry.h, carry.c, y), (fh, fc, fy), rtol=1e-12, atol=1e-14)
  else:
    fh, fy = fcell(h, x)
    carry, y = cell.step(params, h, x)
    chex.assert_trees_all_close((carry, y), (fh, fy), rtol=1e-12, atol=1e-14)


def test_from_torch_reads_the_whole_module_by_default():
  """Issue 21: from_torch(kind, state) used to return layer 0's forward params alone."""
  rng = np.random.default_rng(1)
  H, I = 3, 2
  shapes = {"weight_ih": (3 * H, I), "weight_hh": (3 * H, H), "bias_ih": (3 * H,)}
  shapes["bias_hh"] = (3 * H,)
  state = {}
  for l in range(2):
    for sfx in ("", "_reverse"):
      for n, shape in shapes.items():
        shape = (3 * H, 2 * H) if (n == "weight_ih" and l == 1) else shape
        state[f"{n}_l{l}{sfx}"] = rng.normal(size=shape)
  layers = interop.from_torch("gru", state, dtype=jnp.float64)
  assert len(layers) == 2 and all(len(pair) == 2 for pair in layers)
  np.testing.assert_array_equal(layers[1][1][1].w_x, state["weight_ih_l1_reverse"].T)
  chex.assert_trees_all_equal(interop.to_torch(layers), interop.to_torch(layers))
  assert sorted(interop.to_torch(layers)) == sorted(state)


@pytest.mark.parametrize(("bidirectional", "lstm"), [(True, True), (False, False)])
def test_carries_from_torch_layouts_and_back(bidirectional, lstm):
  """PyTorch's h0/c0 [num_layers·directions, B, H] in layer-then-direction order,
  and the unbatched [num_layers·directions, H]; carries_to_torch inverts it."""
  cell = rj.lstm(3) if lstm else rj.gru(3)
  layers = rj.init_stacked(jax.random.key(0), [cell, cell], 2, bidirectional=bidirectional)
  D = 2 if bidirectional else 1
  h0 = jnp.arange(2 * D * 5 * 3, dtype=jnp.float64).reshape(2 * D, 5, 3)
  c0 = -h0 if lstm else None
  carries = interop.carries_from_torch(layers, h0, c0)
  k = D  # layer 1's forward direction sits right after layer 0's directions
  got = carries[1][0] if bidirectional else carries[1]
  np.testing.assert_array_equal(got.h if lstm else got, h0[k])
  back = interop.carries_to_torch(carries)
  chex.assert_trees_all_equal(back, (h0, c0) if lstm else h0)
  # unbatched
  one = interop.carries_from_torch(layers, h0[:, 0], None if c0 is None else c0[:, 0])
  first = one[0][0] if bidirectional else one[0]
  assert (first.h if lstm else first).shape == (3,)
  # a single layer's [1, B, H] for rj.scan
  single = interop.carries_from_torch(
    (cell, layers[0][0][1] if bidirectional else layers[0][1]),
    h0[:1],
    None if c0 is None else c0[:1],
  )
  np.testing.assert_array_equal(single.h if lstm else single, h0[0])


def test_carries_from_torch_errors_name_the_layout():
  layers = rj.init_stacked(jax.random.key(0), [rj.lstm(3)] * 2, 2, bidirectional=True)
  h = jnp.zeros((4, 5, 3))
  with pytest.raises(ValueError, match=r"LSTM carry \(h, c\), so pass c0"):
    interop.carries_from_torch(layers, h)
  with pytest.raises(ValueError, match=r"h0 has shape \(2, 5, 3\).*num_layers·directions = 4"):
    interop.carries_from_torch(layers, h[:2], h[:2])
  with pytest.raises(ValueError, match=r"h0\[0\] \(layer 0\) has shape \(5, 2\).*\(5, 3\)"):
    interop.carries_from_torch(layers, h[..., :2], h)
  gru = rj.init_stacked(jax.random.key(0), [rj.gru(3)], 2)
  with pytest.raises(ValueError, match=r"c0 is given but .*drop c0"):
    interop.carries_from_torch(gru, h[:1], h[:1])

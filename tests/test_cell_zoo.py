"""The cell zoo (rnnjax/_src/cells/zoo.py), each cell built on `rj.custom_cell` and
held to an independent reference: flax's MGUCell with copied weights, or a NumPy
loop of the paper's equations, one sequence at a time up to its length."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import rnnjax as rj
from rnnjax import jacobian as jac
from rnnjax._src.cells import zoo
from tests.helpers import assert_trees_close

T, B, I, H = 5, 3, 3, 4
LENGTHS = np.array([5, 2, 0])  # a full, a short and an empty sequence
TOL = {"rtol": 1e-12, "atol": 1e-12}


def _random_like(tree, rng, scale=0.5):
  """Random float64 arrays shaped like ``tree``'s leaves (NumPy's generator: no
  per-shape compilation, so the tests stay fast); a NamedTuple's gains ``g_*`` around 1."""
  if hasattr(tree, "_fields"):
    return type(tree)(
      **{
        f: _random_like(v, rng, scale) + (1.0 if f.startswith("g_") else 0.0)
        for f, v in zip(tree._fields, tree, strict=True)
      }
    )
  return jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape)), tree)


def _setup(cell, seed=0):
  """Random params (every leaf off its init: peepholes, gains and biases non-zero),
  inputs [T, B, I] and a non-zero initial carry, all float64."""
  rng = np.random.default_rng(seed)
  params = _random_like(jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0)), rng)
  xs = jnp.asarray(rng.standard_normal((T, B, I)))
  carry0 = _random_like(jax.eval_shape(lambda: cell.initial_carry((B,), jnp.float64)), rng)
  return params, xs, carry0


def _np(tree):
  return jax.tree.map(np.asarray, tree)


def sig(z):
  return 1.0 / (1.0 + np.exp(-z))


def ln(z, gain, bias=0.0, eps=1e-5):
  mu = z.mean(-1, keepdims=True)
  var = ((z - mu) ** 2).mean(-1, keepdims=True)
  return gain * (z - mu) / np.sqrt(var + eps) + bias


def np_run(step, carry0, xs, lengths=LENGTHS, reverse=False):
  """Each sequence alone, by a NumPy loop of ``step(carry, x) -> (carry, y)`` over
  its valid steps; ``rj.scan``'s layout (ys zero past each length)."""
  carry0 = tuple(np.asarray(c) for c in jax.tree.leaves(carry0))
  xs = np.asarray(xs)
  finals, ys = [], None
  for b in range(xs.shape[1]):
    carry = tuple(c[b] for c in carry0)
    L = int(lengths[b])
    for t in reversed(range(L)) if reverse else range(L):
      carry, y = step(carry, xs[t, b])
      if ys is None:
        ys = np.zeros((xs.shape[0], xs.shape[1], y.shape[-1]))
      ys[t, b] = y
    finals.append(carry)
  return [np.stack(c) for c in zip(*finals, strict=True)], ys


def check_against(cell, params, xs, carry0, np_step, reverse=False):
  carry, ys = rj.scan(cell, params, xs, carry0, lengths=LENGTHS, reverse=reverse)
  ref_carry, ref_ys = np_run(np_step, carry0, xs, reverse=reverse)
  np.testing.assert_allclose(ys, ref_ys, **TOL)
  for got, want in zip(jax.tree.leaves(carry), ref_carry, strict=True):
    np.testing.assert_allclose(got, want, **TOL)


# ----------------------------------------------------------------- MGU


def test_mgu_equals_flax_mgu_cell():
  mod = nn.MGUCell(features=H, param_dtype=jnp.float64, dtype=jnp.float64)
  shapes = jax.eval_shape(mod.init, jax.random.key(0), jnp.zeros((B, H)), jnp.zeros((B, I)))
  fparams = _random_like(shapes["params"], np.random.default_rng(0))  # biases non-zero too
  params = zoo.MGUParams(
    w_x=jnp.concatenate([fparams["if"]["kernel"], fparams["in"]["kernel"]], 1),
    w_h=jnp.concatenate([fparams["hf"]["kernel"], fparams["hn"]["kernel"]], 1),
    b=jnp.concatenate([fparams["if"]["bias"], fparams["in"]["bias"]]),
    b_hn=fparams["hn"]["bias"],
  )
  cell = zoo.mgu(H)
  _, xs, h0 = _setup(cell, 1)
  carry, ys = rj.scan(cell, params, xs, h0, lengths=LENGTHS)
  apply = jax.jit(mod.apply)
  h, ref = h0, []  # flax's cell in a loop, each sequence held past its length
  for t in range(T):
    new, y = apply({"params": fparams}, h, xs[t])
    valid = jnp.asarray(t < LENGTHS)[:, None]
    h = jnp.where(valid, new, h)
    ref.append(jnp.where(valid, y, 0.0))
  np.testing.assert_allclose(ys, jnp.stack(ref), **TOL)
  np.testing.assert_allclose(carry, h, **TOL)
  # the init follows flax's: forget bias 1, the others 0
  p = cell.init(jax.random.key(0), I)
  assert p.b.tolist() == [1.0] * H + [0.0] * H and not p.b_hn.any()


# ----------------------------------------------------------------- IndRNN


@pytest.mark.parametrize(
  ("activation", "recurrent_max", "reverse"), [("relu", None, False), ("tanh", 0.5, True)]
)
def test_indrnn_matches_the_paper_loop(activation, recurrent_max, reverse):
  cell = zoo.indrnn(H, activation, recurrent_max)
  params, xs, h0 = _setup(cell, 2)
  params = params._replace(u=jnp.array([1.3, -0.9, 0.2, -0.4]))  # two past a 0.5 bound
  u, w, b = _np(params.u), _np(params.w_x), _np(params.b)
  if recurrent_max is not None:
    u = np.clip(u, -recurrent_max, recurrent_max)  # the paper's bound on |u|
  f = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh}[activation]

  def step(carry, x):  # h_t = σ(W x_t + u ⊙ h_{t-1} + b)
    h = f(x @ w + u * carry[0] + b)
    return (h,), h

  check_against(cell, params, xs, h0, step, reverse=reverse)
  if recurrent_max is not None:
    u0 = cell.init(jax.random.key(3), I).u
    assert float(jnp.abs(u0).max()) <= recurrent_max


# ----------------------------------------------------------------- LSTM variants


def test_peephole_lstm_matches_the_paper_loop_and_is_the_lstm_without_peepholes():
  cell = zoo.peephole_lstm(H)
  params, xs, carry0 = _setup(cell, 4)
  w, u, b, p = _np(params.w_x), _np(params.w_h), _np(params.b), _np(params.w_c)
  W = [w[:, k * H : (k + 1) * H] for k in range(4)]
  U = [u[:, k * H : (k + 1) * H] for k in range(4)]
  bb = [b[k * H : (k + 1) * H] for k in range(4)]
  p_i, p_f, p_o = p[:H], p[H : 2 * H], p[2 * H :]

  def step(carry, x):  # Gers & Schmidhuber (2000); Greff et al. (2017)'s vanilla LSTM
    h, c = carry
    i = sig(x @ W[0] + h @ U[0] + p_i * c + bb[0])
    f = sig(x @ W[1] + h @ U[1] + p_f * c + bb[1])
    g = np.tanh(x @ W[2] + h @ U[2] + bb[2])
    c = f * c + i * g
    o = sig(x @ W[3] + h @ U[3] + p_o * c + bb[3])
    h = o * np.tanh(c)
    return (h, c), h

  check_against(cell, params, xs, carry0, step)
  plain = params._replace(w_c=jnp.zeros_like(params.w_c))
  lstm_params = rj.LSTMParams(params.w_x, params.w_h, params.b)
  got = rj.scan(cell, plain, xs, carry0, lengths=LENGTHS)
  assert_trees_close(got, rj.scan(rj.lstm(H), lstm_params, xs, carry0, lengths=LENGTHS))
  assert not cell.init(jax.random.key(0), I).w_c.any()  # starts as the plain LSTM


def test_cifg_lstm_matches_the_paper_loop():
  cell = zoo.cifg_lstm(H)
  params, xs, carry0 = _setup(cell, 5)
  w, u, b = _np(params.w_x), _np(params.w_h), _np(params.b)
  W = [w[:, k * H : (k + 1) * H] for k in range(3)]
  U = [u[:, k * H : (k + 1) * H] for k in range(3)]
  bb = [b[k * H : (k + 1) * H] for k in range(3)]

  def step(carry, x):  # Greff et al. (2017), CIFG: i = 1 − f
    h, c = carry
    f = sig(x @ W[0] + h @ U[0] + bb[0])
    g = np.tanh(x @ W[1] + h @ U[1] + bb[1])
    o = sig(x @ W[2] + h @ U[2] + bb[2])
    i = 1.0 - f
    c = f * c + i * g
    h = o * np.tanh(c)
    return (h, c), h

  check_against(cell, params, xs, carry0, step, reverse=True)


def test_lstm_projected_matches_the_torch_equations():
  P = 2
  cell = zoo.lstm_projected(H, P)
  params, xs, carry0 = _setup(cell, 6)
  assert carry0.h.shape == (B, P) and carry0.c.shape == (B, H) and cell.hidden_size == P
  assert repr(cell) == "rnnjax.lstm_projected(2, cell_size=4, forget_bias=1.0)"
  w, u, b, r = _np(params.w_x), _np(params.w_h), _np(params.b), _np(params.w_r)

  def step(carry, x):  # torch.nn.LSTM(proj_size=P), row layout: weight_*.T
    h, c = carry
    z = x @ w + h @ u + b
    i, f, g, o = sig(z[:H]), sig(z[H : 2 * H]), np.tanh(z[2 * H : 3 * H]), sig(z[3 * H :])
    c = f * c + i * g
    h = (o * np.tanh(c)) @ r  # h_t = W_hr (o_t ⊙ tanh c_t)
    return (h, c), h

  check_against(cell, params, xs, carry0, step)
  assert rj.scan(cell, params, xs)[1].shape == (T, B, P)


# ----------------------------------------------------------------- layer normalisation


def _rescaled(cell, params, xs, carry0):
  """The step does not see the scale of w_x and w_h: layer normalisation's defining
  invariance (exact as ε → 0; ε = 1e-12 here)."""
  scaled = params._replace(w_x=3.0 * params.w_x, w_h=0.25 * params.w_h)
  np.testing.assert_allclose(
    rj.scan(cell, scaled, xs, carry0)[1], rj.scan(cell, params, xs, carry0)[1], atol=1e-9
  )


def test_layer_norm_lstm_matches_the_paper_loop():
  cell = zoo.layer_norm_lstm(H)
  params, xs, carry0 = _setup(cell, 7)
  q = _np(params)

  def step(carry, x):  # Ba, Kiros & Hinton (2016), the layer-normalised LSTM
    h, c = carry
    z = ln(x @ q.w_x, q.g_x) + ln(h @ q.w_h, q.g_h) + q.b
    i, f, g, o = (z[k * H : (k + 1) * H] for k in range(4))
    c = sig(f) * c + sig(i) * np.tanh(g)
    h = sig(o) * np.tanh(ln(c, q.g_c, q.b_c))
    return (h, c), h

  check_against(cell, params, xs, carry0, step)
  _rescaled(zoo.layer_norm_lstm(H, eps=1e-12), params, xs, carry0)


def test_layer_norm_gru_matches_the_authors_loop():
  cell = zoo.layer_norm_gru(H)
  params, xs, h0 = _setup(cell, 8)
  q = _np(params)
  G, N = slice(0, 2 * H), slice(2 * H, 3 * H)

  def step(carry, x):  # ryankiros/layer-norm, lngru_layer (without the pre-LN input bias)
    (h,) = carry
    gates = sig(ln(x @ q.w_x[:, G], q.g_x[G]) + ln(h @ q.w_h[:, G], q.g_h[G]) + q.b[G])
    r, z = gates[:H], gates[H:]
    n = np.tanh(ln(x @ q.w_x[:, N], q.g_x[N]) + q.b[N] + r * ln(h @ q.w_h[:, N], q.g_h[N], q.b_hn))
    h = z * h + (1.0 - z) * n
    return (h,), h

  check_against(cell, params, xs, h0, step, reverse=True)
  _rescaled(zoo.layer_norm_gru(H, eps=1e-12), params, xs, h0)


# ----------------------------------------------------------------- orthogonal RNN


def test_orthogonal_rnn_is_an_isometry_and_matches_the_loop():
  cell = zoo.orthogonal_rnn(H)
  params, xs, h0 = _setup(cell, 9)
  q = _np(params)
  W = scipy.linalg.expm(q.a - q.a.T)
  np.testing.assert_allclose(W.T @ W, np.eye(H), atol=1e-12)

  def step(carry, x):  # Lezcano-Casado & Martínez-Rubio (2019): h_t = f(x_t w_x + h_{t-1} W + b)
    h = np.tanh(x @ q.w_x + carry[0] @ W + q.b)
    return (h,), h

  check_against(cell, params, xs, h0, step)
  # the same step as rj.elman with w_h = W (the documented fast path)
  elman = rj.ElmanParams(params.w_x, jnp.asarray(W), params.b)
  np.testing.assert_allclose(rj.scan(cell, params, xs)[1], rj.scan(rj.elman(H), elman, xs)[1])

  linear = zoo.orthogonal_rnn(H, "linear")
  Js = jac.step_jacobians(linear, params, xs[:, 0])  # jax.jacfwd of the step, unbatched
  np.testing.assert_allclose(np.linalg.svd(np.asarray(Js), compute_uv=False), 1.0, atol=1e-10)
  np.testing.assert_allclose(Js, np.broadcast_to(W.T, Js.shape), atol=1e-12)  # ∂h_t/∂h_{t-1} = Wᵀ


# ----------------------------------------------------------------- every cell


ZOO = {
  "mgu": zoo.mgu(H),
  "indrnn-relu": zoo.indrnn(H),
  "indrnn-bounded": zoo.indrnn(H, "tanh", 0.5),
  "peephole_lstm": zoo.peephole_lstm(H),
  "cifg_lstm": zoo.cifg_lstm(H),
  "lstm_projected": zoo.lstm_projected(H, 2),
  "layer_norm_lstm": zoo.layer_norm_lstm(H),
  "layer_norm_gru": zoo.layer_norm_gru(H),
  "orthogonal_rnn": zoo.orthogonal_rnn(H),
}


@pytest.mark.parametrize("name", list(ZOO))
def test_bptt_gives_autodiffs_gradients(name):
  cell = ZOO[name]
  params, xs, carry0 = _setup(cell, 11)
  if name == "indrnn-bounded":
    params = params._replace(u=jnp.array([1.3, -0.9, 0.2, -0.4]))  # clipped: zero gradient

  def loss(p, x, c0, mode):
    carry, ys = rj.scan(cell, p, x, c0, lengths=LENGTHS, backward=mode)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(carry))

  grad = jax.grad(loss, argnums=(0, 1, 2))
  got, want = jax.jit(lambda *a: (grad(*a, "bptt"), grad(*a, "autodiff")))(params, xs, carry0)
  assert_trees_close(got, want, rtol=1e-10, atol=1e-12)
  assert float(jnp.abs(got[1][LENGTHS[1] :, 1]).max()) == 0.0  # padding gets no gradient
  assert float(jnp.abs(got[0].w_x).max()) > 0.0


def test_zoo_cells_in_layers_under_jit_and_their_errors():
  cells = [zoo.lstm_projected(H, 2), zoo.mgu(H)]
  shapes = jax.eval_shape(lambda k: rj.init_stacked(k, cells, I), jax.random.key(0))
  layers = _random_like(shapes, np.random.default_rng(0))
  assert layers[1][1].w_x.shape == (2, 2 * H)  # the projected P = 2 feeds the MGU
  _, xs, _ = _setup(cells[1])
  assert rj.stacked(layers, xs)[1].shape == (T, B, H)
  cell = zoo.layer_norm_gru(H)
  assert cell == zoo.layer_norm_gru(H)  # memoized: equal cells, one compilation
  params, _, _ = _setup(cell)
  np.testing.assert_allclose(jax.jit(rj.scan)(cell, params, xs)[1], rj.scan(cell, params, xs)[1])
  assert repr(zoo.indrnn(H, recurrent_max=2.0)) == (
    "rnnjax.indrnn(4, activation='relu', recurrent_max=2.0)"
  )
  with pytest.raises(ValueError, match=r"rnnjax.indrnn: unknown activation 'gelu'"):
    zoo.indrnn(H, "gelu")
  with pytest.raises(ValueError, match=r"recurrent_max must be a positive number"):
    zoo.indrnn(H, recurrent_max=0.0)
  with pytest.raises(ValueError, match=r"rnnjax.layer_norm_lstm: eps must be a positive"):
    zoo.layer_norm_lstm(H, eps=0)
  with pytest.raises(ValueError, match=r"rnnjax.lstm_projected: proj_size must be a positive"):
    zoo.lstm_projected(H, 0)
  with pytest.raises(TypeError, match=r"orthogonal_rnn.*init: key must be a JAX PRNG key"):
    zoo.orthogonal_rnn(H).init(0, I)
  with pytest.raises(TypeError, match=r"cifg_lstm.*initial_carry: batch_shape must be a tuple"):
    zoo.cifg_lstm(H).initial_carry(8)

"""rnnjax.nnx: the NNX modules give the functional API's values and gradients,
agree with flax's nnx.RNN on valid steps (and differ, as documented, on
padding), train under nnx.Optimizer, and round-trip through nnx.split/merge.

References are independent of the modules: `rj.scan`/`rj.bidirectional`/
`rj.stacked` with the same params, a NumPy re-indexing for flax's processing
order, flax's own nnx.RNN and nnx.Bidirectional, and a hand-run optax step."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import rnnjax as rj
import rnnjax.nnx as rnx
from rnnjax import interop
from tests.helpers import assert_trees_close

B, T, I, H = 3, 5, 2, 4
LENGTHS = jnp.array([5, 3, 1])


def _custom(hidden):
  """A custom cell with dict params: h_t = tanh(x W + h U)."""

  def init(key, input_size):
    kw, ku = jax.random.split(key)
    return {
      "w": 0.5 * jax.random.normal(kw, (input_size, hidden)),
      "u": 0.4 * jax.random.normal(ku, (hidden, hidden)),
    }

  def step(p, h, x):
    h = jnp.tanh(x @ p["w"] + h @ p["u"])
    return h, h

  def initial_carry(batch_shape=(), dtype=jnp.float32):
    return jnp.zeros((*batch_shape, hidden), dtype)

  return rj.custom_cell(init, step, initial_carry, name="tanh_rnn")


CUSTOM = _custom(H)
CELLS = {"lstm": rj.lstm(H), "gru": rj.gru(H, reset="after"), "custom": CUSTOM}


@functools.cache
def _params(name, seed=0):
  """float64 params of the cell's shapes (``jax.eval_shape`` of its init, so no
  initialiser runs: they cost seconds of compiling here), N(0, 0.5²) entries,
  biases included (so a bias mix-up cannot pass)."""
  rng = np.random.default_rng(seed)
  shapes = jax.eval_shape(lambda key: CELLS[name].init(key, I), jax.random.key(0))
  return jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape)), shapes)


def _xs(seed=1, shape=(B, T, I)):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _weights(shape, seed=2):
  return jax.random.normal(jax.random.key(seed), shape, jnp.float64)


def _processing_order(ys, lengths):
  """``ys [B, T, ·]`` aligned with the inputs -> flax's processing order of a
  reversed run: ``out[b, t] = ys[b, L_b - 1 - t]`` for ``t < L_b``, padding as is."""
  ys, out = np.asarray(ys), np.array(ys)
  for b, L in enumerate(np.asarray(lengths)):
    out[b, :L] = ys[b, :L][::-1]
  return out


def _fl(tree):
  """rnnjax's carries in flax's layout, as the modules return them: (c, h) for the LSTM."""
  return jax.tree.map(
    lambda c: (c.c, c.h) if isinstance(c, rj.LSTMCarry) else c,
    tree,
    is_leaf=lambda c: isinstance(c, rj.LSTMCarry),
  )


def _loss(carry, ys):
  """Reads every output and every carry leaf, with distinct weights."""
  return jnp.sum(ys * _weights(ys.shape)) + sum(jnp.sum(c * c) for c in jax.tree.leaves(carry))


@pytest.mark.parametrize(
  ("name", "reverse", "keep_order"),
  [
    ("lstm", True, False),
    ("gru", True, True),
  ],
)
def test_rnn_equals_scan(name, reverse, keep_order):
  """Values and gradients (params and inputs) equal rj.scan's with the same params.
  (Forward runs are in every other test; the custom cell, with dict params,
  in the stacked tests.)"""
  cell, params, xs = CELLS[name], _params(name), _xs()
  carry0 = jax.tree.map(lambda c: 0.3 + c, cell.initial_carry((B,), jnp.float64))
  rnn = rnx.RNN(cell, I, params=params, reverse=reverse, keep_order=keep_order, return_carry=True)
  assert rnn.out_features == H

  def module_loss(model, xs):
    carry, ys = model(xs, initial_carry=carry0, seq_lengths=LENGTHS)
    aligned = ys
    if reverse and not keep_order:  # back from processing order, so both losses read the same
      aligned = jnp.swapaxes(rj.flip(jnp.swapaxes(ys, 0, 1), LENGTHS), 0, 1)
    return _loss(carry, aligned), (carry, ys)

  def functional_loss(p, xs):
    out = rj.scan(cell, p, xs, carry0, lengths=LENGTHS, reverse=reverse, time_major=False)
    return _loss(*out), out

  (_, out), (g_model, g_xs) = nnx.value_and_grad(module_loss, argnums=(0, 1), has_aux=True)(rnn, xs)
  (_, (ref_carry, ref_ys)), (ref_gp, ref_gx) = jax.value_and_grad(
    functional_loss, argnums=(0, 1), has_aux=True
  )(params, xs)
  if reverse and not keep_order:
    ref_ys = _processing_order(ref_ys, LENGTHS)
  assert_trees_close(out, (_fl(ref_carry), ref_ys))
  ref_gp = ref_gp if isinstance(ref_gp, dict) else ref_gp._asdict()
  g_params = nnx.to_pure_dict(g_model)["params"]
  assert_trees_close(g_params, {k: v for k, v in ref_gp.items() if v is not None})
  assert_trees_close(g_xs, ref_gx)


def _flax_lstm():
  """flax's nnx.OptimizedLSTMCell in float64 with N(0, 0.5²) weights and
  biases (set, not initialised: flax's initialisers cost seconds of compiling),
  and its weights as rnnjax params (rj.interop.from_flax on the NNX state)."""
  abstract = nnx.eval_shape(
    lambda: nnx.OptimizedLSTMCell(I, H, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
  )
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(5)
  fcell = nnx.merge(graphdef, jax.tree.map(lambda s: 0.5 * rng.normal(size=s.shape), state))
  return fcell, interop.from_flax("lstm", nnx.state(fcell, nnx.Param))


@pytest.mark.parametrize(
  ("reverse", "keep_order", "time_major"),
  [(False, False, False), (True, False, False), (True, True, True)],
)
def test_rnn_equals_flax_nnx_rnn_on_valid_steps(reverse, keep_order, time_major):
  """Same weights, same conventions: flax.nnx.RNN(OptimizedLSTMCell) and
  rnnjax.nnx.RNN(rj.lstm) agree on every valid step and on the carry (at each
  sequence's last valid step). On padded steps rnnjax returns zeros and flax
  what its cell computed on the padding: the documented difference."""
  fcell, params = _flax_lstm()
  kw = {"reverse": reverse, "keep_order": keep_order, "time_major": time_major}
  ours = rnx.RNN(rj.lstm(H), I, params=params, return_carry=True, **kw)
  theirs = nnx.RNN(fcell, return_carry=True, **kw)
  xs = _xs(shape=(T, B, I) if time_major else (B, T, I))
  h0, c0 = _weights((B, H), seed=6), _weights((B, H), seed=7)
  (c, h), ys = ours(xs, initial_carry=(c0, h0), seq_lengths=LENGTHS)  # flax's (c, h)
  (fc, fh), fys = theirs(xs, initial_carry=(c0, h0), seq_lengths=LENGTHS)
  assert_trees_close((h, c), (fh, fc))
  # an rj.LSTMCarry is read by its names
  assert_trees_close(ours(xs, initial_carry=rj.LSTMCarry(h0, c0), seq_lengths=LENGTHS)[0], (c, h))

  ys, fys = (np.swapaxes(a, 0, 1) if time_major else np.asarray(a) for a in (ys, fys))
  valid = np.arange(T)[None, :] < np.asarray(LENGTHS)[:, None]  # [B, T], also in flax's order
  np.testing.assert_allclose(ys[valid], fys[valid], rtol=1e-10, atol=1e-12)
  assert (ys[~valid] == 0).all()  # rnnjax zeros the padding ...
  assert (np.abs(fys[~valid]).max(axis=-1) > 1e-3).all()  # ... flax does not

  if not reverse:  # without seq_lengths the two agree everywhere
    ys_full = ours(xs, initial_carry=(c0, h0))[1]
    ys_flax = theirs(xs, initial_carry=(c0, h0))[1]
    np.testing.assert_allclose(ys_full, ys_flax, rtol=1e-10, atol=1e-12)


def test_bidirectional_equals_functional_and_flax_bidirectional():
  """rnnjax.nnx.Bidirectional = rj.bidirectional (values, carries, gradients),
  and flax's own nnx.Bidirectional drives rnnjax.nnx.RNN modules alike."""
  fwd_p, bwd_p, xs = _params("lstm"), _params("gru"), _xs()
  fwd = rnx.RNN(CELLS["lstm"], I, params=fwd_p)
  bwd = rnx.RNN(CELLS["gru"], I, params=bwd_p)
  bi = rnx.Bidirectional(fwd, bwd, return_carry=True)
  assert bi.out_features == 2 * H

  def functional_loss(pf, pb):
    layers = (CELLS["lstm"], pf), (CELLS["gru"], pb)
    out = rj.bidirectional(*layers, xs, lengths=LENGTHS, time_major=False)
    return _loss(*out), out

  def module_loss(model):
    out = model(xs, seq_lengths=LENGTHS)
    return _loss(*out), out

  (_, out), g = nnx.value_and_grad(module_loss, has_aux=True)(bi)
  (_, ref), (ref_f, ref_b) = jax.value_and_grad(functional_loss, argnums=(0, 1), has_aux=True)(
    fwd_p, bwd_p
  )
  ref = _fl(ref)
  assert_trees_close(out, ref)
  g = nnx.to_pure_dict(g)
  assert_trees_close(g["forward_rnn"]["params"], ref_f._asdict())
  assert_trees_close(g["backward_rnn"]["params"], ref_b._asdict())
  flax_bi = nnx.Bidirectional(fwd, bwd, return_carry=True)
  assert_trees_close(flax_bi(xs, seq_lengths=LENGTHS), ref)
  # flax's call-time arguments run unchanged (unused, as in flax)
  flax_kw = dict(rngs=nnx.Rngs(1), reverse=False, keep_order=False)
  assert_trees_close(bi(xs, seq_lengths=LENGTHS, **flax_kw), ref)


def _stack(**kw):
  """A two-layer stack of a built-in and a custom cell, built abstractly
  (``nnx.eval_shape``: the same constructor, no initialiser run) and given
  float64 N(0, 0.5²) params."""
  abstract = nnx.eval_shape(lambda: rnx.Stacked([CELLS["gru"], CUSTOM], I, rngs=nnx.Rngs(3), **kw))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(3)
  return nnx.merge(
    graphdef, jax.tree.map(lambda s: jnp.asarray(0.5 * rng.normal(size=s.shape)), state)
  )


def test_stacked_equals_functional_stacked_custom_cell_included():
  stack = _stack(bidirectional=True, residual=True)
  layers, xs = stack.to_layers(), _xs()
  assert isinstance(layers[1][0][0], rj.Cell) and layers[1][1][0] is CUSTOM

  def module_loss(model):
    out = model(xs, seq_lengths=LENGTHS, return_carry=True)
    return _loss(*out), out

  def functional_loss(layers):
    out = rj.stacked(layers, xs, lengths=LENGTHS, residual=True, time_major=False)
    return _loss(*out), out

  (_, out), grads = nnx.value_and_grad(module_loss, has_aux=True)(stack)
  (_, ref), ref_grads = jax.value_and_grad(functional_loss, has_aux=True)(layers)
  assert_trees_close(out, ref)
  assert out[1].shape == (B, T, 2 * H)
  g_stack = nnx.clone(stack)
  nnx.update(g_stack, grads)  # the gradients laid out as the module's params
  assert_trees_close(g_stack.to_layers(), ref_grads)


def test_stacked_dropout_is_off_after_eval():
  stack = rnx.Stacked([CUSTOM, CUSTOM], I, rngs=nnx.Rngs(0), dropout_rate=0.5)
  xs = _xs().astype(jnp.float32)
  ref = rj.stacked(stack.to_layers(), xs, time_major=False)[1]
  stack.eval()
  np.testing.assert_array_equal(stack(xs), ref)
  stack.train()
  assert not np.allclose(stack(xs), ref)
  # closed over by a plain jax transform: the call's rngs draw the masks
  with pytest.raises(ValueError, match=r"pass rngs=nnx.Rngs\(key\).*to the call"):
    jax.grad(lambda x: stack(x).sum())(xs)
  g = jax.grad(lambda x, k: stack(x, rngs=k).sum())(xs, jax.random.key(1))
  assert g.shape == xs.shape and float(jnp.abs(g).max()) > 0


class _Regressor(nnx.Module):
  """An RNN and a linear head reading its last valid output (the carry's h)."""

  def __init__(self, rngs):
    self.rnn = rnx.RNN(CELLS["gru"], I, params=_params("gru"), return_carry=True)
    self.head = nnx.Linear(H, 1, param_dtype=jnp.float64, rngs=rngs)

  def __call__(self, xs, lengths):
    h, _ = self.rnn(xs, seq_lengths=lengths)
    return self.head(h)[:, 0]


def _task():
  """Targets: the mean of each sequence's first input feature over its length."""
  xs, lengths = _xs(seed=8, shape=(16, T, I)), jnp.arange(16) % T + 1
  mask = jnp.arange(T)[None, :] < lengths[:, None]
  return xs, lengths, jnp.sum(xs[..., 0] * mask, axis=1) / lengths


def _mse(model, xs, lengths, target):
  return jnp.mean((model(xs, lengths) - target) ** 2)


def test_training_with_nnx_optimizer_and_optax():
  """One nnx.Optimizer step equals optax.adam applied by hand to the
  functional gradient; 30 jitted steps cut the loss at least 5-fold."""
  xs, lengths, target = _task()
  model = _Regressor(nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)

  # the reference step, by hand: rj.scan + the head's affine map, optax on a plain tree
  cell, p0 = model.rnn.to_layer()
  head0 = {"kernel": model.head.kernel.get_value(), "bias": model.head.bias.get_value()}

  def functional_loss(tree):
    h, _ = rj.scan(cell, tree["rnn"], xs, lengths=lengths, time_major=False)
    pred = (h @ tree["head"]["kernel"] + tree["head"]["bias"][None, :])[:, 0]
    return jnp.mean((pred - target) ** 2)

  @jax.jit
  def functional_step(tree):
    tx = optax.adam(0.05)
    updates, _ = tx.update(jax.grad(functional_loss)(tree), tx.init(tree), tree)
    return functional_loss(tree), optax.apply_updates(tree, updates)

  ref_loss0, tree1 = functional_step({"rnn": p0, "head": head0})

  @nnx.jit
  def train_step(model, opt, xs, lengths, target):
    loss, grads = nnx.value_and_grad(_mse)(model, xs, lengths, target)
    opt.update(model, grads)
    return loss

  loss0 = train_step(model, opt, xs, lengths, target)
  np.testing.assert_allclose(loss0, ref_loss0, rtol=1e-12)
  assert_trees_close(model.rnn.to_layer()[1], tree1["rnn"])
  np.testing.assert_allclose(model.head.kernel.get_value(), tree1["head"]["kernel"], rtol=1e-10)
  for _ in range(29):
    loss = train_step(model, opt, xs, lengths, target)
  assert loss < loss0 / 5, (float(loss0), float(loss))


def test_state_round_trips_through_split_merge():
  xs, lengths, _ = _task()
  model = _Regressor(nnx.Rngs(0))
  apply = nnx.jit(lambda model: model(xs, lengths))  # one compile for every model below
  graphdef, state = nnx.split(model)
  flat = {path for path, _ in nnx.to_flat_state(state)}
  assert {("rnn", "params", n) for n in ("w_x", "w_h", "b", "b_hn")} <= flat
  np.testing.assert_array_equal(apply(nnx.merge(graphdef, state)), apply(model))

  # a checkpoint as a plain dict of NumPy arrays, restored into another model
  saved = jax.tree.map(np.asarray, nnx.to_pure_dict(state))
  other = _Regressor(nnx.Rngs(1))
  other.rnn.params.w_x.set_value(jnp.zeros((I, 3 * H), jnp.float64))
  assert not np.allclose(apply(other), apply(model))
  _, other_state = nnx.split(other)
  nnx.replace_by_pure_dict(other_state, saved)
  nnx.update(other, other_state)
  np.testing.assert_array_equal(apply(other), apply(model))

  # a whole stack: the same cells (static, in the graphdef) and params
  stack = _stack(bidirectional=True)
  merged = nnx.merge(*nnx.split(stack))
  assert merged.layers[1].backward_rnn.cell.rnnjax_cell is CUSTOM
  chex.assert_trees_all_equal(merged.to_layers(), stack.to_layers())


def test_linen_rnn_equals_scan():
  cell, params, xs = CELLS["lstm"], _params("lstm"), _xs()
  layer = rnx.LinenRNN(cell, reverse=True, keep_order=True, return_carry=True)
  variables = {"params": {"cell": params}}
  carry, ys = layer.apply(variables, xs, seq_lengths=LENGTHS)
  assert_trees_close(
    (carry, ys), _fl(rj.scan(cell, params, xs, lengths=LENGTHS, reverse=True, time_major=False))
  )
  shapes = jax.eval_shape(layer.init, jax.random.key(0), xs)
  assert jax.tree.map(jnp.shape, shapes["params"]["cell"]) == jax.tree.map(jnp.shape, params)


def test_errors_name_the_fix():
  with pytest.raises(ValueError, match=r"pass rngs=nnx.Rngs\(seed\) .* not neither"):
    rnx.RNN(CELLS["lstm"], I)
  with pytest.raises(ValueError, match=r"not both"):
    rnx.RNN(CELLS["lstm"], I, rngs=nnx.Rngs(0), params=_params("lstm"))
  with pytest.raises(TypeError, match=r"cell must be an rnnjax Cell .* got OptimizedLSTMCell"):
    rnx.RNN(_flax_lstm()[0], I, params=_params("lstm"))
  with pytest.raises(ValueError, match=r"in_features must be a positive int, got 0"):
    rnx.RNN(CELLS["lstm"], 0, params=_params("lstm"))
  with pytest.raises(ValueError, match=r"params do not fit .* in_features=3 .* input_size 2"):
    rnx.RNN(CELLS["lstm"], 3, params=_params("lstm"))  # params for I = 2
  with pytest.raises(ValueError, match=r"leaf \.b_hn of shape \(4,\) that the given"):
    rnx.RNN(CELLS["gru"], I, params=_params("gru")._replace(b_hn=None))
  rnn = rnx.RNN(CELLS["lstm"], I, params=_params("lstm"))
  with pytest.raises(ValueError, match=r"xs has feature size 3 but params expect input_size 2"):
    rnn(_xs(shape=(B, T, 3)))
  pallas = rnx.RNN(CELLS["lstm"], I, params=_params("lstm"), kernel="pallas")
  assert "pallas_call" in str(jax.make_jaxpr(lambda x: pallas(x))(_xs()))  # kernel= reaches rj.scan
  h = jnp.zeros((B, H))
  with pytest.raises(ValueError, match=r"initial_carry for .* is flax's LSTM carry \(c, h\)"):
    rnn(_xs(), initial_carry=h)
  wrong = jnp.zeros((B + 1, H))
  with pytest.raises(ValueError, match=r"initial_carry leaf has shape \(4, 4\).*batch shape"):
    rnn(_xs(), initial_carry=(wrong, wrong))
  with pytest.raises(ValueError, match=r"inputs have shape \(3,\), rank 1.*at least rank 2"):
    rnn(jnp.ones(3))
  with pytest.raises(ValueError, match=r"seq_lengths has shape \(4,\).*batch shape \(3,\)"):
    rnn(_xs(), seq_lengths=jnp.ones(B + 1, jnp.int32))
  with pytest.raises(ValueError, match=r"recurrent_dropout_rate must lie in \[0, 1\)"):
    rnx.RNN(CELLS["lstm"], I, rngs=nnx.Rngs(0), recurrent_dropout_rate=1.0)
  with pytest.raises(ValueError, match=r"dropout needs rngs"):
    rnx.RNN(CELLS["lstm"], I, params=_params("lstm"), dropout_rate=0.5)(_xs())
  with pytest.raises(TypeError, match=r"broadcast_rngs must be None, a stream name"):
    rnx.RNN(CELLS["lstm"], I, rngs=nnx.Rngs(0), broadcast_rngs=3)
  with pytest.raises(ValueError, match=r"cells is empty"):
    rnx.Stacked([], I, rngs=nnx.Rngs(0))
  with pytest.raises(
    ValueError, match=r"residual=True adds layer 1's input .* maps 4 features to 2"
  ):
    rnx.Stacked([CUSTOM, _custom(2)], I, rngs=nnx.Rngs(0), residual=True)
  stack = rnx.Stacked([CUSTOM], I, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"initial_carry has 2 carries for 1 layers"):
    stack(_xs(), initial_carry=[None, None])

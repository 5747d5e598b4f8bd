"""Bring your own cell: a plain step function gets the scan, the hand-written BPTT,
the layers and the Jacobian tools, held equal to the built-in cells and to autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import jacobian as jac
from tests.helpers import assert_trees_close, f64

H, I = 4, 3


@pytest.fixture(autouse=True)
def _user_code_broadcasts():
  """The users' steps below add a [kH] bias to [B, kH] as NumPy code does; the suite
  raises on rank promotion elsewhere to catch it inside the library."""
  with jax.numpy_rank_promotion("allow"):
    yield


def _lstm_init(key, input_size):
  p = rj.lstm(H).init(key, input_size)
  return {"gates": {"x": p.w_x, "h": p.w_h}, "bias": p.b}  # a user's own layout


def _lstm_step(p, carry, x):
  """The LSTM written out plainly, on a (c, h) tuple carry."""
  c, h = carry
  z = x @ p["gates"]["x"] + h @ p["gates"]["h"] + p["bias"]
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


def _zeros(shape=(), dtype=jnp.float32):
  return (jnp.zeros((*shape, H), dtype), jnp.zeros((*shape, H), dtype))


my_lstm = rj.custom_cell(_lstm_init, _lstm_step, _zeros, name="my_lstm", output_size=H)


def _same_weights(key):
  p = f64(rj.lstm(H).init(key, I))
  p = p._replace(b=p.b + 0.3 * jax.random.normal(jax.random.fold_in(key, 1), p.b.shape))
  return p, {"gates": {"x": p.w_x, "h": p.w_h}, "bias": p.b}


def test_custom_lstm_equals_the_builtin_with_lengths_and_reverse():
  builtin, mine = _same_weights(jax.random.key(0))
  xs = jax.random.normal(jax.random.key(1), (6, 3, I), jnp.float64)
  lengths = jnp.array([6, 4, 0])
  for reverse in (False, True):
    (c, h), ys = rj.scan(my_lstm, mine, xs, lengths=lengths, reverse=reverse)
    ref_carry, ref = rj.scan(rj.lstm(H), builtin, xs, lengths=lengths, reverse=reverse)
    np.testing.assert_allclose(ys, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(h, ref_carry.h, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(c, ref_carry.c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("backward", ["bptt", "checkpoint"])
def test_custom_cell_gradients_equal_autodiff(backward):
  _, mine = _same_weights(jax.random.key(2))
  xs = jax.random.normal(jax.random.key(3), (7, 3, I), jnp.float64)
  carry0 = jax.tree.map(lambda a: a + 0.1, _zeros((3,), jnp.float64))
  lengths = jnp.array([7, 2, 5])

  def loss(p, x, c0, mode):
    (c, h), ys = rj.scan(my_lstm, p, x, c0, lengths=lengths, reverse=True, backward=mode)
    return jnp.sum(ys**2) + jnp.sum(jnp.sin(c)) + jnp.sum(h)

  got = jax.grad(loss, argnums=(0, 1, 2))(mine, xs, carry0, backward)
  assert_trees_close(got, jax.grad(loss, argnums=(0, 1, 2))(mine, xs, carry0, "autodiff"))
  assert float(jnp.abs(got[1][:, 1][2:]).max()) == 0.0  # padding gets no gradient


def _readout_init(key, input_size):
  k1, k2 = jax.random.split(key)
  return {"w": jax.random.normal(k1, (input_size + H, H)) / 3, "out": jax.random.normal(k2, (H, 5))}


def _readout_step(p, h, x):
  """h' = tanh([x, h] W); y = h' U: an output that is not the carry (O = 5)."""
  h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
  return h, h @ p["out"]


readout = rj.custom_cell(
  _readout_init,
  _readout_step,
  lambda shape=(), dtype=jnp.float32: jnp.zeros((*shape, H), dtype),
  name="readout",
  output_size=5,
)


def test_an_output_that_is_not_the_carry_and_the_layers():
  p = f64(readout.init(jax.random.key(0), I))
  xs = jax.random.normal(jax.random.key(1), (5, 2, I), jnp.float64)
  h, ys = rj.scan(readout, p, xs)
  assert ys.shape == (5, 2, 5) and h.shape == (2, H)
  ref_h, ref_ys = h0, out = jnp.zeros((2, H), jnp.float64), []
  for t in range(5):
    ref_h, y = _readout_step(p, ref_h, xs[t])
    out.append(y)
  np.testing.assert_allclose(ys, jnp.stack(out), rtol=1e-12)
  del ref_ys, h0

  def loss(p, mode):
    return jnp.sum(jnp.cos(rj.scan(readout, p, xs, backward=mode)[1]))

  assert_trees_close(jax.grad(loss)(p, "bptt"), jax.grad(loss)(p, "autodiff"))
  layers = rj.init_stacked(jax.random.key(2), [readout, my_lstm], I, bidirectional=True)
  _, ys = rj.stacked(layers, xs.astype(jnp.float32))
  assert ys.shape == (5, 2, 2 * H)  # 2·5 features fed the LSTM
  ys_jit = jax.jit(rj.scan)(readout, p, xs)[1]  # a custom cell is static too
  np.testing.assert_allclose(ys_jit, rj.scan(readout, p, xs)[1], rtol=1e-12)


def test_jacobian_tools_measure_a_custom_cell():
  builtin, mine = _same_weights(jax.random.key(4))
  xs = jax.random.normal(jax.random.key(5), (12, I), jnp.float64)
  measured = jac.step_jacobians(my_lstm, mine, xs)  # jax.jacfwd, state s = [c; h]
  closed = jac.step_jacobians(rj.lstm(H), builtin, xs)  # closed form, s = [h; c]
  perm = np.r_[H : 2 * H, 0:H]  # reorder [c; h] -> [h; c]
  np.testing.assert_allclose(measured[:, perm][:, :, perm], closed, rtol=1e-10, atol=1e-12)
  # the finite-time exponents depend on the random initial basis (here in permuted
  # coordinates); their sum, the mean log |det J_t|, does not
  np.testing.assert_allclose(
    jnp.sum(jac.lyapunov_spectrum(my_lstm, mine, xs)),
    jnp.sum(jac.lyapunov_spectrum(rj.lstm(H), builtin, xs)),
    rtol=1e-9,
  )
  report = jac.diagnose(my_lstm, mine, xs)
  assert "pascanu" not in report and report["state_size"] == 2 * H
  with pytest.raises(ValueError, match=r"declares no activation"):
    jac.lecture_bound(my_lstm, mine, xs)


def test_custom_cell_errors():
  with pytest.raises(
    TypeError, match=r"rnnjax.custom_cell\('custom_cell'\): step must be callable, got int"
  ):
    rj.custom_cell(_lstm_init, 3, _zeros)


# ---------------------------------------------------------------- bad input


def _tiny_init(key, input_size):
  return {"w": jax.random.normal(key, (input_size + H, H), jnp.float32) / 3}


def _tiny_step(p, h, x):
  h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
  return h, h


def _h_zeros(shape=(), dtype=jnp.float32):
  return jnp.zeros((*shape, H), dtype)


def _tiny(step=_tiny_step, init=_tiny_init, initial_carry=_h_zeros, **kw):
  return rj.custom_cell(init, step, initial_carry, name="tiny", **kw)


def _traced(cell, B=2, T=5, **kw):
  """``rj.scan`` evaluated abstractly: the checks must fire while tracing, with no compute."""
  params = jax.eval_shape(lambda: cell.init(jax.random.key(0), I))
  xs = jax.ShapeDtypeStruct((T, B, I), jnp.float32)
  return jax.eval_shape(lambda p, x: rj.scan(cell, p, x, **kw), params, xs)


def test_a_step_that_changes_the_carry_structure_or_shape():
  def grows(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return (h, h), h  # a tuple carry from an array carry

  with pytest.raises(
    ValueError,
    match=r"rnnjax.custom_cell\('tiny'\): step\(params, carry, x\) with x \(2, 3\) float32 "
    r"returned a carry of structure PyTreeDef\(\(\*, \*\)\), \{\[0\]: \(2, 4\) float32, "
    r"\[1\]: \(2, 4\) float32\}, but it was given the carry \(2, 4\) float32",
  ):
    _traced(_tiny(grows))

  def shrinks(p, h, x):
    h, y = _tiny_step(p, h, x)
    return h[:, :2], y

  msg = r"'tiny'.*returned the carry leaf <root> with shape \(2, 2\), but it was given \(2, 4\)"
  for backward in ("bptt", "autodiff", "checkpoint"):
    with pytest.raises(ValueError, match=msg):
      _traced(_tiny(shrinks), backward=backward)
  with pytest.raises(
    ValueError, match=r"'tiny'.*shape \(2,\), but it was given \(4,\)"
  ):  # unbatched
    jac.step_jacobians(
      _tiny(lambda p, h, x: (h[:2], h)), _tiny_init(jax.random.key(0), I), jnp.ones((3, I))
    )

  def lstm_swaps(p, carry, x):  # returns the LSTM's carry as a list, not the tuple it was given
    (c, h), y = _lstm_step(p, carry, x)
    return [c, h], y

  swapped = rj.custom_cell(_lstm_init, lstm_swaps, _zeros, name="swapped")
  with pytest.raises(ValueError, match=r"'swapped'.*structure PyTreeDef\(\[\*, \*\]\).*given"):
    rj.scan(swapped, swapped.init(jax.random.key(0), I), jnp.ones((4, 2, I)))


def test_a_step_that_returns_integers_or_a_wrong_y():
  def int_y(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return h, jnp.argmax(h, -1, keepdims=True)

  with pytest.raises(TypeError, match=r"'tiny'.*returned y of dtype int\d+ and shape \(2, 1\)"):
    _traced(_tiny(int_y))

  def int_carry(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return (h > 0).astype(jnp.int32), h

  with pytest.raises(
    TypeError, match=r"'tiny'.*returned the carry leaf <root> as \(2, 4\) int32, given \(2, 4\)"
  ):
    _traced(_tiny(int_carry))

  def one_row(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return h, h[:1]

  with pytest.raises(
    ValueError,
    match=r"'tiny'.*returned y of shape \(1, 4\) for the carry \(3, 4\) float32, of batch "
    r"shape \(3,\); y must have the carry's batch shape in front: \(3, 4\)",
  ):
    _traced(_tiny(one_row), B=3)

  def wide_y(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return h, jnp.concatenate([h, h], -1)

  # O is found by jax.eval_shape of the three functions; output_size= overrides it, and a
  # wrong override is caught where the step runs
  assert _tiny(wide_y).hidden_size == 2 * H
  assert _traced(_tiny(wide_y))[1].shape == (5, 2, 2 * H)
  with pytest.raises(ValueError, match=r"'tiny'.*y of shape \(2, 8\).*pass output_size=8"):
    _traced(_tiny(wide_y, output_size=H))
  with pytest.raises(TypeError, match=r"'tiny'.*must return a pair \(carry, y\), got ArrayImpl"):
    _tiny(lambda p, h, x: h).step(
      _tiny_init(jax.random.key(0), I), _h_zeros((2,)), jnp.ones((2, I))
    )


@pytest.mark.parametrize("backward", ["bptt", "autodiff"])
def test_a_step_that_changes_the_carry_dtype_gets_rnnjax_error(backward):
  """Not lax.scan's "carry input and carry output must have equal types": the leaf, both
  dtypes and the fix (issue 20)."""

  def half_carry(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return h.astype(jnp.float16), h

  with pytest.raises(
    TypeError,
    match=r"'tiny'.*returned the carry leaf <root> as \(2, 4\) float16, but it was given "
    r"\(2, 4\) float32: .*keep each carry leaf's dtype \(float32 here, not float16\).*"
    r"astype",
  ):
    _traced(_tiny(half_carry), backward=backward)


def test_a_step_returning_y_of_rank_3_is_refused_by_scan():
  """``y: [B, O, 2]`` for a ``[B, H]`` carry used to run through rj.scan (issue 20)."""

  def rank3(p, h, x):
    h, _ = _tiny_step(p, h, x)
    return h, jnp.stack([h, h], -1)

  with pytest.raises(
    ValueError, match=r"'tiny'.*returned y of shape \(2, 4, 2\) \(rank 3\).*one vector per"
  ):
    _traced(_tiny(rank3))


def test_an_init_that_returns_non_floating_leaves():
  def init(key, input_size):
    return {"w": _tiny_init(key, input_size)["w"], "steps": jnp.arange(3), "n": 7}

  cell = _tiny(init=init)
  msg = (
    r"rnnjax.custom_cell\('tiny'\): init\(key, 3\) returned non-floating params leaves "
    r"\['n'\]: \(\) int\d+, \['steps'\]: \(3,\) int\d+ \(params \{\['n'\]: \(\) int\d+, "
    r"\['steps'\]: \(3,\) int\d+, \['w'\]: \(7, 4\) float32\}\)"
  )
  with pytest.raises(TypeError, match=msg):
    cell.init(jax.random.key(0), I)
  params = {"w": jnp.zeros((I + H, H)), "steps": jnp.zeros(3), "n": 7.0}  # float: fine
  with pytest.raises(TypeError, match=msg):  # rj.scan checks params against init, abstractly
    rj.scan(cell, params, jnp.ones((5, 2, I)))
  with pytest.raises(TypeError, match=r"rnnjax.custom_cell\('tiny'\).init: key must be a JAX"):
    cell.init(0, I)


def test_an_initial_carry_that_does_not_match_the_step():
  def five(shape=(), dtype=jnp.float32):
    return jnp.zeros((*shape, 5), dtype)

  def proj_step(p, h, x):  # the carry's size comes from the params, H = 4
    h = jnp.tanh(x @ p["w"][:I] + jnp.sum(h, -1, keepdims=True))
    return h, h

  with pytest.raises(
    ValueError,
    match=r"'tiny'.*returned the carry leaf <root> with shape \(2, 4\), but it was given "
    r"\(2, 5\), the shape initial_carry\(\(2,\), float32\) builds: .*initial_carry must build",
  ):
    _traced(_tiny(proj_step, initial_carry=five))
  # a step that cannot even run on that carry: its own error gets a note naming the shapes
  with pytest.raises(TypeError) as e:
    _traced(_tiny(initial_carry=five))
  assert any(
    "raised inside the step of rnnjax.custom_cell('tiny'), called with the carry (2, 5) "
    "float32 and x (2, 3) float32; initial_carry(batch_shape, dtype) builds the carry "
    "(*batch_shape, 5) float32" in note
    for note in getattr(e.value, "__notes__", [])
  )
  # checked at construction: the batch shape in front, floating leaves, some leaves
  with pytest.raises(
    ValueError,
    match=r"'tiny'\): initial_carry\(\(2,\), float32\) built the carry leaf <root> with shape "
    r"\(4,\), but initial_carry\(\(\), float32\) builds \(4,\)",
  ):
    _tiny(initial_carry=lambda shape=(), dtype=jnp.float32: jnp.zeros(H, dtype))
  with pytest.raises(TypeError, match=r"'tiny'\): initial_carry\(\(\), float32\) built non-float"):
    _tiny(initial_carry=lambda shape=(), dtype=None: jnp.zeros((*shape, H), jnp.int32))
  with pytest.raises(ValueError, match=r"'tiny'\): initial_carry returned no arrays"):
    _tiny(initial_carry=lambda shape=(), dtype=None: ())
  with pytest.raises(TypeError, match=r"'tiny'\).initial_carry: batch_shape must be a tuple"):
    _tiny().initial_carry(8)


def _lstm_project(p, x):
  """The hoisted part: zx = x W_x + b over any leading axes."""
  return x @ p["gates"]["x"] + p["bias"]


def _lstm_update(p, carry, zx):
  c, h = carry
  i, f, g, o = jnp.split(zx + h @ p["gates"]["h"], 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), h


hinted_lstm = rj.custom_cell(
  _lstm_init,
  _lstm_step,
  _zeros,
  name="hinted_lstm",
  output_size=H,
  project=_lstm_project,
  update=_lstm_update,
)


def test_the_projection_hint_is_hoisted_and_exact():
  builtin, mine = _same_weights(jax.random.key(6))
  xs = jax.random.normal(jax.random.key(7), (6, 3, I), jnp.float64)
  lengths = jnp.array([6, 1, 4])
  _, ys = rj.scan(hinted_lstm, mine, xs, lengths=lengths, reverse=True)
  _, ref = rj.scan(rj.lstm(H), builtin, xs, lengths=lengths, reverse=True)
  np.testing.assert_allclose(ys, ref, rtol=1e-12, atol=1e-14)

  def loss(p, x, mode):
    return jnp.sum(rj.scan(hinted_lstm, p, x, lengths=lengths, backward=mode)[1] ** 2)

  assert_trees_close(
    jax.grad(loss, argnums=(0, 1))(mine, xs, "bptt"),
    jax.grad(loss, argnums=(0, 1))(mine, xs, "autodiff"),
  )
  # hoisted: the scan body holds only the recurrent matmul, the projection runs once
  jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(hinted_lstm, p, x, backward="autodiff"))(mine, xs)
  scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  body = scans[0].params["jaxpr"].jaxpr
  assert sum(e.primitive.name == "dot_general" for e in body.eqns) == 1
  assert all(c.passed for c in rj.check_cell(hinted_lstm, I).values())
  with pytest.raises(ValueError, match=r"the projection hint needs update\(params, carry, zx\)"):
    rj.custom_cell(_lstm_init, _lstm_step, _zeros, project=_lstm_project)


def test_a_cell_whose_y_has_another_size_needs_only_the_three_functions():
  """O = 2 for a carry h: [B, 4]: found by jax.eval_shape, no output_size=; rj.scan (both
  backwards, equal to a Python loop), the layers and the Jacobian tools run it."""
  O = 2

  def init(key, i):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (i + H, H)), "out": jax.random.normal(k2, (H, O))}

  def step(p, h, x):
    h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
    return h, h @ p["out"]

  cell = rj.custom_cell(init, step, _h_zeros, name="readout")
  assert cell.hidden_size == O and cell.state_size == H
  params = f64(cell.init(jax.random.key(0), I))
  xs = jax.random.normal(jax.random.key(1), (5, 2, I), jnp.float64)
  h, want = jnp.zeros((2, H), jnp.float64), []
  for x in xs:  # the reference: a Python loop over the step
    h, y = step(params, h, x)
    want.append(y)
  np.testing.assert_allclose(rj.scan(cell, params, xs)[1], jnp.stack(want), rtol=1e-12)

  def loss(p, backward):
    return jnp.sum(rj.scan(cell, p, xs, backward=backward)[1] ** 2)

  assert_trees_close(jax.grad(loss)(params, "bptt"), jax.grad(loss)(params, "autodiff"))
  layers = f64(rj.init_stacked(jax.random.key(2), [cell, cell], I))
  assert layers[1][1]["w"].shape == (O + H, H)  # the second layer reads y: [B, O]
  _, ys2 = rj.stacked(layers, xs)
  assert ys2.shape == (5, 2, O)
  bi = f64(rj.init_stacked(jax.random.key(3), [cell], I, bidirectional=True))
  _, ysb = rj.bidirectional(*bi[0], xs)
  assert ysb.shape == (5, 2, 2 * O)
  assert jac.step_jacobians(cell, params, xs[:, 0]).shape == (5, H, H)
  assert jac.gradient_norms_vs_lag(cell, params, xs[:, 0]).shape == (6,)

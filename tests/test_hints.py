"""Each hint of `rj.custom_cell` held to the hint-free path and to autodiff, and the
built-in cells as instances of the same protocol."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import assert_trees_close, f64

H, I = 4, 3


@pytest.fixture(autouse=True)
def _user_code_broadcasts():
  """The users' steps below add a [kH] bias to [B, kH] as NumPy code does."""
  with jax.numpy_rank_promotion("allow"):
    yield


def _init(key, input_size):
  p = rj.lstm(H).init(key, input_size)
  return {"w_x": p.w_x, "w_h": p.w_h, "b": p.b, "unused": jnp.ones(2)}


def _gates(z, c):
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  return jax.nn.sigmoid(o) * jnp.tanh(c), c


def _step(p, carry, x):
  h, c = carry
  h, c = _gates(x @ p["w_x"] + h @ p["w_h"] + p["b"], c)
  return (h, c), h


def _zeros(shape=(), dtype=jnp.float32):
  return (jnp.zeros((*shape, H), dtype), jnp.zeros((*shape, H), dtype))


def _project(p, x):
  return x @ p["w_x"] + p["b"]


def _update(p, carry, zx):
  h, c = carry
  h, c = _gates(zx + h @ p["w_h"], c)
  return (h, c), h


def _update_zh(p, carry, zx, zh):  # zh = h @ w_h, computed by the kernel
  h, c = _gates(zx + zh, carry[1])
  return (h, c), h


def _forward(p, carry, zx):  # the LocalBackward's forward keeps the gates
  h_prev, c_prev = carry
  i, f, g, o = jnp.split(zx + h_prev @ p["w_h"], 4, axis=-1)
  i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
  c = f * c_prev + i * g
  h = o * jnp.tanh(c)
  return (h, c), h, (i, f, g, o)


def _backward(p, prev, carry, res, d, dy):
  i, f, g, o = res
  dh = d[0] + dy
  tc = jnp.tanh(carry[1])
  dc = d[1] + dh * o * (1 - tc**2)
  dz = jnp.concatenate(
    [dc * g * i * (1 - i), dc * prev[1] * f * (1 - f), dc * i * (1 - g**2), dh * tc * o * (1 - o)],
    -1,
  )
  return (dz @ p["w_h"].T, dc * f), dz, dz


def _backward_per_step(p, prev, carry, res, d, dy):
  """The same local backward, returning this step's params gradient itself."""
  dprev, dzx, dz = _backward(p, prev, carry, res, d, dy)
  zeros = jax.tree.map(jnp.zeros_like, p)
  return dprev, dzx, {**zeros, "w_h": prev[0].T @ dz}


def _rule(p, prev, res, dzh):
  return {"w_h": prev[0].T @ dzh}  # over all N = T·B rows at once


CELLS = {
  "hint-free": dict(),
  "project": dict(project=_project, update=_update),
  "project+recurrent": dict(
    project=_project, update=_update_zh, recurrent=rj.RecurrentMatmul("w_h")
  ),
  "project+backward": dict(
    project=_project, backward=rj.LocalBackward(_forward, _backward_per_step)
  ),
  "all hints": dict(
    project=_project,
    backward=rj.LocalBackward(_forward, _backward, _rule),
  ),
}


def _cell(hints):
  return rj.custom_cell(_init, _step, _zeros, name="user_lstm", **CELLS[hints])


def _data():
  p = f64(_init(jax.random.key(0), I))
  p["b"] = p["b"] + 0.3 * jax.random.normal(jax.random.key(1), p["b"].shape, jnp.float64)
  xs = jax.random.normal(jax.random.key(2), (6, 3, I), jnp.float64)
  return p, xs, jnp.array([6, 2, 4])


@pytest.mark.parametrize("hints", list(CELLS))
def test_each_hint_equals_the_builtin_lstm_and_autodiff(hints):
  cell, (p, xs, lengths) = _cell(hints), _data()
  builtin = rj.LSTMParams(p["w_x"], p["w_h"], p["b"])

  def loss(params, x, c, mode, ref=False):
    carry, ys = rj.scan(
      rj.lstm(H) if ref else cell, params, x, c, lengths=lengths, reverse=True, backward=mode
    )
    return jnp.sum(ys**2) + jnp.sum(jax.tree.leaves(carry)[1] ** 3)

  c0 = (0.1 * xs[0, :, :1] * jnp.ones(H), 0.2 * xs[1, :, :1] * jnp.ones(H))
  grad = jax.grad(loss, argnums=(0, 1, 2))
  got = grad(p, xs, c0, "bptt")
  assert_trees_close(got, grad(p, xs, c0, "autodiff"), rtol=1e-10, atol=1e-12)
  want = grad(builtin, xs, rj.LSTMCarry(*c0), "bptt", ref=True)
  np.testing.assert_allclose(got[0]["w_h"], want[0].w_h, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(got[0]["w_x"], want[0].w_x, rtol=1e-10, atol=1e-12)
  np.testing.assert_allclose(got[1], want[1], rtol=1e-10, atol=1e-12)
  np.testing.assert_array_equal(got[0]["unused"], 0.0)  # complete, and zero where unread
  report = rj.check_cell(cell, I)
  assert report["backward_step"].max_rel_err < 1e-10


def _backward_scan_carry_shapes(cell, p, xs):
  """The shapes the hand-written BPTT's reverse scan carries (its per-step sums)."""

  def loss(params):
    return jnp.sum(rj.scan(cell, params, xs)[1])

  jaxpr = jax.make_jaxpr(jax.grad(loss))(p).jaxpr
  scans = [e for e in _eqns(jaxpr) if e.primitive.name == "scan" and e.params["reverse"]]
  (scan,) = scans
  n = scan.params["num_consts"]
  return {tuple(v.aval.shape) for v in scan.invars[n : n + scan.params["num_carry"]]}, scan


def _eqns(jaxpr):
  for e in jaxpr.eqns:
    yield e
    for sub in jax.extend.core.jaxprs_in_params(e.params):
      yield from _eqns(sub)


def test_what_each_hint_takes_out_of_the_reverse_scan():
  p, xs, _ = _data()
  w_x, w_h = (I, 4 * H), (H, 4 * H)
  shapes = {h: _backward_scan_carry_shapes(_cell(h), p, xs) for h in CELLS}
  # hint-free: the step reads every weight, so each is summed per step (never `unused`)
  assert {w_x, w_h} <= shapes["hint-free"][0] and (2,) not in shapes["hint-free"][0]
  # projection: w_x's gradient is one VJP over all rows, w_h's is still per step
  assert w_x not in shapes["project"][0] and w_h in shapes["project"][0]
  # recurrent: no weight is summed per step; dW = read(C_prev)ᵀ dZh once
  for h in ("project+recurrent", "all hints"):
    assert not {w_x, w_h} & shapes[h][0], h

  def dots(scan):
    return sum(e.primitive.name == "dot_general" for e in _eqns(scan.params["jaxpr"].jaxpr))

  # the reverse body's matmuls: only dzh w_hᵀ with the recurrent or hand-written hints
  assert dots(shapes["all hints"][1]) == 1
  assert dots(shapes["project+recurrent"][1]) == 1
  assert dots(shapes["project"][1]) == 3  # + the recompute of h w_h, and the outer product


def test_the_recurrent_hint_differentiates_other_params_per_step():
  """A gain the update reads besides zh gets its gradient per step; `read` picks the
  carry's part that multiplies the weight."""

  def init(key, input_size):
    kx, kh = jax.random.split(key)
    return {
      "w_x": jax.random.normal(kx, (input_size, H)),
      "w_h": jax.random.normal(kh, (H, H)) / 2,
      "gain": jnp.full((H,), 0.7),
    }

  def step(p, carry, x):
    h = jnp.tanh(p["gain"] * (x @ p["w_x"] + carry["h"] @ p["w_h"]))
    return {"t": carry["t"] + 1.0, "h": h}, h

  def update(p, carry, zx, zh):
    h = jnp.tanh(p["gain"] * (zx + zh))
    return {"t": carry["t"] + 1.0, "h": h}, h

  def zeros(shape=(), dtype=jnp.float32):
    return {"t": jnp.zeros((*shape, 1), dtype), "h": jnp.zeros((*shape, H), dtype)}

  cell = rj.custom_cell(
    init,
    step,
    zeros,
    name="gained",
    output_size=H,
    project=lambda p, x: x @ p["w_x"],
    update=update,
    recurrent=rj.RecurrentMatmul("w_h", read=lambda c: c["h"]),
  )
  p, (_, xs, lengths) = f64(cell.init(jax.random.key(3), I)), _data()

  def loss(params, mode):
    return jnp.sum(rj.scan(cell, params, xs, lengths=lengths, backward=mode)[1] ** 2)

  got, want = jax.grad(loss)(p, "bptt"), jax.grad(loss)(p, "autodiff")
  assert_trees_close(got, want, rtol=1e-10, atol=1e-12)
  assert float(jnp.max(jnp.abs(got["gain"]))) > 1e-3  # not a vacuous zero


def test_check_cell_names_a_wrong_hand_written_backward():
  def wrong(p, prev, carry, res, d, dy):
    dprev, dzx, dz = _backward(p, prev, carry, res, d, dy)
    return dprev, dzx, 1.01 * dz  # the recurrent rows are off: dw_h is wrong

  cell = rj.custom_cell(
    _init, _step, _zeros, project=_project, backward=rj.LocalBackward(_forward, wrong, _rule)
  )
  with pytest.raises(rj.CellCheckError, match=r"recurrent_grads.*\['w_h'\]"):
    rj.check_cell(cell, I)


def test_a_rule_that_misses_a_leaf_fails_at_trace_time():
  def forward(p, carry, zx):  # the recurrence reads `unused` now
    (h, c), _, res = _forward(p, carry, zx)
    return (h * p["unused"][0], c), h * p["unused"][0], res

  cell = rj.custom_cell(
    _init, _step, _zeros, project=_project, backward=rj.LocalBackward(forward, _backward, _rule)
  )
  p, xs, _ = _data()
  with pytest.raises(ValueError, match=r"fast_step reads params \[\"\['unused'\]\"\]"):
    jax.grad(lambda q: jnp.sum(rj.scan(cell, q, xs)[1]))(p)


def test_hints_that_do_not_combine():
  rm = rj.RecurrentMatmul("w_h")
  lb = rj.LocalBackward(_forward, _backward, _rule)
  cases = [
    (dict(project=_project), ValueError, r"projection hint needs update"),
    (dict(update=_update), ValueError, r"update is the step after a hint"),
    (dict(project=_project, recurrent=rm), ValueError, r"recurrent-matmul hint needs update"),
    (
      dict(project=_project, update=_update_zh, recurrent=rm, backward=lb),
      ValueError,
      r"recurrent= and backward= do not combine",
    ),
    (dict(recurrent=("w_h", None), update=_update_zh), TypeError, r"rnnjax.RecurrentMatmul"),
    (dict(backward=(_forward, _backward)), TypeError, r"rnnjax.LocalBackward"),
    (dict(project=_project, update=_update, backward=lb), ValueError, r"update= is unused"),
  ]
  for kw, error, match in cases:
    with pytest.raises(error, match=match):
      rj.custom_cell(_init, _step, _zeros, **kw)
  cell = rj.custom_cell(
    _init, _step, _zeros, project=_project, update=_update_zh, recurrent=rj.RecurrentMatmul("W")
  )
  p, xs, _ = _data()
  with pytest.raises(
    ValueError,
    match=r"RecurrentMatmul\(weight='W'\) names no params field; "
    r"the params have \['b', 'unused', 'w_h', 'w_x'\]",
  ):
    rj.scan(cell, p, xs)


def test_the_builtins_are_custom_cells_with_every_hint():
  """One mechanism: elman, gru and lstm are made by rj.custom_cell's builder with a
  BackwardRows hint (a projection, a hand-written backward and its recurrent rule) and a
  ClosedJacobian, so the user's LSTM with the same hints (here as rnnjax 0.1's
  LocalBackward keyword, which maps onto BackwardRows) runs the same code path and gives
  identical numbers."""
  user = _cell("all hints")
  for cell in (rj.elman(H), rj.gru(H), rj.gru(H, reset="after"), rj.lstm(H), user):
    assert cell.init.__qualname__ == "build.<locals>.checked_init", cell
    assert cell.fast_step.__qualname__ == "_hand_written_rows.<locals>.fast_step", cell
    assert cell.backward_step.__qualname__ == "_hand_written_rows.<locals>.backward_step", cell
    assert cell.recurrent_grads is not None, cell
    assert cell.state_jacobian is not None or cell is user, cell
  p, xs, lengths = _data()
  builtin = rj.LSTMParams(p["w_x"], p["w_h"], p["b"])
  _, ys = rj.scan(user, p, xs, lengths=lengths)
  _, ref = rj.scan(rj.lstm(H), builtin, xs, lengths=lengths)
  np.testing.assert_allclose(ys, ref, rtol=1e-13, atol=1e-15)


def test_params_of_any_named_pytree_and_a_jitted_forward():
  """Found in review: the rule's and the per-step gradients are placed by field and
  leaf, not by a rebuilt dict's (sorted) order; a jitted core inside the forward
  reads only what its body reads."""
  from collections import OrderedDict

  def init(key, input_size):
    p = _init(key, input_size)
    return OrderedDict(w_x=p["w_x"], w_h=p["w_h"], a=jnp.full((4 * H,), 0.9), b=p["b"])

  def update(p, carry, zx, zh):
    h, c = _gates(p["a"] * (zx + zh), carry[1])
    return (h, c), h

  def step(p, carry, x):
    return update(p, carry, _project(p, x), carry[0] @ p["w_h"])

  @jax.jit
  def core(p, carry, zx):  # reads only w_h: the rule covers it
    return _forward(p, carry, zx)

  cells = [
    rj.custom_cell(
      init, step, _zeros, project=_project, update=update, recurrent=rj.RecurrentMatmul("w_h")
    ),
    rj.custom_cell(
      _init, _step, _zeros, project=_project, backward=rj.LocalBackward(core, _backward, _rule)
    ),
  ]
  _, xs, lengths = _data()
  for cell in cells:
    p = f64(cell.init(jax.random.key(4), I))

    def loss(params, mode, cell=cell):
      return jnp.sum(rj.scan(cell, params, xs, lengths=lengths, backward=mode)[1] ** 2)

    got, want = jax.grad(loss)(p, "bptt"), jax.grad(loss)(p, "autodiff")
    assert type(got) is type(p)
    assert_trees_close(got, want, rtol=1e-10, atol=1e-12)


def test_a_per_step_gradient_in_another_structure_is_refused():
  def as_list(p, prev, carry, res, d, dy):
    dprev, dzx, g = _backward_per_step(p, prev, carry, res, d, dy)
    return dprev, dzx, list(g.values())  # the right leaves, the wrong structure

  cell = rj.custom_cell(
    _init, _step, _zeros, project=_project, backward=rj.LocalBackward(_forward, as_list)
  )
  p, xs, _ = _data()
  with pytest.raises(ValueError, match=r"params gradient in the params' own structure"):
    jax.grad(lambda q: jnp.sum(rj.scan(cell, q, xs)[1]))(p)


def test_hint_objects_compose_and_compile_as_the_keywords():
  """Each step hint is one object carrying its options (its update or forward, its
  projection); the Jacobian hint is another. Every pair builds, and each compiles to
  the slots rnnjax 0.1's keywords gave: gradients equal the built-in LSTM's."""
  objects = {
    "ProjectedStep": rj.ProjectedStep(_project, _update),
    "MatmulStep": rj.MatmulStep("w_h", _update_zh, project=_project),
    "BackwardStep": rj.BackwardStep(_forward, _backward_per_step, _project),
    "BackwardRows": rj.BackwardRows(_forward, _backward, _rule, _project, rows_are_dzx=True),
  }
  jac = rj.ClosedJacobian(rj.lstm(H).state_jacobian)
  p, xs, lengths = _data()
  builtin = rj.LSTMParams(p["w_x"], p["w_h"], p["b"])

  def loss(cell, params):
    carry, ys = rj.scan(cell, params, xs, lengths=lengths)
    return jnp.sum(ys**2) + jnp.sum(jax.tree.leaves(carry)[1] ** 3)

  want = jax.grad(lambda q: loss(rj.lstm(H), q))(builtin)
  for name, fast in objects.items():
    cell = rj.custom_cell(_init, _step, _zeros, name=name, fast=fast, jacobian=jac)
    assert cell.state_jacobian is jac.fn and (cell.recurrent_grads is None) == (
      name in ("ProjectedStep", "BackwardStep")
    )
    assert cell.compiled.rows_are_dzx == (name == "BackwardRows")
    got = jax.grad(lambda q, c=cell: loss(c, q))(p)
    for k in ("w_x", "w_h", "b"):
      np.testing.assert_allclose(got[k], getattr(want, k), rtol=1e-10, atol=1e-12, err_msg=name)
  with pytest.raises(ValueError, match=r"fast= replaces rnnjax 0.1's project="):
    rj.custom_cell(
      _init, _step, _zeros, fast=objects["MatmulStep"], project=_project, update=_update
    )
  with pytest.raises(TypeError, match=r"fast must be one of rnnjax.ProjectedStep"):
    rj.custom_cell(_init, _step, _zeros, fast=rj.RecurrentMatmul("w_h"))
  with pytest.raises(TypeError, match=r"jacobian must be rnnjax.ClosedJacobian"):
    rj.custom_cell(_init, _step, _zeros, jacobian=jac.fn)
  with pytest.raises(ValueError, match=r"activation= declares .* recurrent_weight="):
    rj.custom_cell(_init, _step, _zeros, activation=rj.elman(H).activation)

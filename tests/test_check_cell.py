"""`check_cell`: the conformance check passes every correct cell, built-in or custom,
and names the slot and the leaf of a cell whose hint is wrong."""

import jax
import jax.numpy as jnp
import pytest

import rnnjax as rj
from tests.helpers import CELLS

H, I = 3, 2
CHECKS = [
  "carry",
  "fast_step",
  "lengths",
  "reverse",
  "backward_step",
  "state_jacobian",
  "state_diagonal",
]


def _scaled(fn, s=1.01):
  """``fn`` with every output leaf scaled by ``s``: a hint that is 1% off."""
  return lambda *a: jax.tree.map(lambda v: s * v, fn(*a))


@pytest.mark.parametrize("variant", ["elman-tanh", "gru-before", "gru-after", "lstm"])
def test_the_builtin_cells_pass(variant):
  cell = CELLS[variant](H)
  report = rj.check_cell(cell, I)
  assert list(report) == CHECKS
  assert all(c.passed and not c.skipped for c in report.values())
  assert report["backward_step"].max_rel_err < 1e-12  # float64: bptt is autodiff to rounding
  assert report["state_jacobian"].max_rel_err < 1e-12
  assert report["state_diagonal"].max_rel_err < 1e-12
  assert report["fast_step"].slot == "fast_step" and report["lengths"].compared


def test_float64_even_when_x64_is_off():
  with jax.enable_x64(False):
    report = rj.check_cell(rj.elman(H, activation="relu"), I, key=jax.random.key(3))
  assert report["backward_step"].max_rel_err < 1e-12  # float32 would give ~1e-7


def _lstm_init(key, input_size):
  p = rj.lstm(H).init(key, input_size)
  return {"x": p.w_x, "h": p.w_h, "b": p.b}


def _lstm_step(p, carry, x):
  c, h = carry
  z = x @ p["x"] + h @ p["h"] + p["b"]
  i, f, g, o = jnp.split(z, 4, axis=-1)
  c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
  h = jax.nn.sigmoid(o) * jnp.tanh(c)
  return (c, h), jnp.concatenate([h, c], -1)  # an output that is not a carry leaf


def _zeros(shape=(), dtype=jnp.float32):
  return (jnp.zeros((*shape, H), dtype), jnp.zeros((*shape, H), dtype))


my_lstm = rj.custom_cell(_lstm_init, _lstm_step, _zeros, name="my_lstm", output_size=2 * H)


def test_a_custom_cell_passes():
  with jax.numpy_rank_promotion("allow"):  # the user's step adds a [4H] bias to [B, 4H]
    report = rj.check_cell(my_lstm, I)
  assert list(report) == CHECKS and all(c.passed for c in report.values())
  assert report["state_jacobian"].skipped  # no closed form: the tools use jax.jacfwd
  assert report["state_diagonal"].skipped
  assert report["backward_step"].max_rel_err < 1e-12


def test_a_wrong_backward_step_is_named():
  cell = rj.lstm(H)
  with pytest.raises(
    rj.CellCheckError,
    match=r"rnnjax.check_cell\(rnnjax.lstm\(3.*\)\): check 'backward_step' failed in slot "
    r"'backward_step': the gradients of backward=\"bptt\" .* differ at (params|xs|carry0)\S* "
    r"(\(lengths, reverse\) )?at index \([\d, ]+\): max abs error [\d.e-]+, max rel error "
    r"[\d.e-]+ \(rtol=1e-07, atol=1e-09\)",
  ) as e:
    rj.check_cell(cell._replace(backward_step=_scaled(cell.backward_step)), I)
  err = e.value
  assert isinstance(err, AssertionError) and (err.check, err.slot) == ("backward_step",) * 2
  assert err.leaf.split(" ")[0] in {
    "params.w_x",
    "params.w_h",
    "params.b",
    "xs",
    "carry0.h",
    "carry0.c",
  }
  assert [k for k, c in err.report.items() if c.passed] == CHECKS[:4]  # the forward is right
  assert not err.report["backward_step"].passed


def test_a_wrong_recurrent_grads_rule_is_named():
  cell = rj.elman(H)
  with pytest.raises(rj.CellCheckError, match=r"failed in slot 'recurrent_grads'.*at params.w_h"):
    rj.check_cell(cell._replace(recurrent_grads=_scaled(cell.recurrent_grads)), I)


def test_a_wrong_state_jacobian_is_named():
  cell = rj.gru(H, reset="after")
  with pytest.raises(
    rj.CellCheckError,
    match=r"check 'state_jacobian' failed in slot 'state_jacobian': the closed-form "
    r"state_jacobian and jax.jacfwd of step .* differ at J at index \(\d, \d, \d\)",
  ) as e:
    rj.check_cell(cell._replace(state_jacobian=_scaled(cell.state_jacobian, 0.99)), I)
  assert e.value.report["state_jacobian"].max_rel_err == pytest.approx(0.01, rel=1e-6)


def test_a_fast_step_that_disagrees_with_step_is_named():
  cell = rj.elman(H)  # its step is built from the original fast_step

  def fast_step(params, h, zx):  # the input projection scaled by 1.01
    return cell.fast_step(params, h, 1.01 * zx)

  with pytest.raises(
    rj.CellCheckError,
    match=r"check 'fast_step' failed in slot 'fast_step': rnnjax.scan's fast path \(project, "
    r"fast_step, output\) and step in a Python loop differ at (ys|carry)",
  ) as e:
    rj.check_cell(cell._replace(fast_step=fast_step), I)
  assert list(e.value.report) == ["carry", "fast_step"]


def test_a_step_that_mixes_the_batch_fails_the_lengths_check():
  def init(key, input_size):
    return {"w": jax.random.normal(key, (input_size + H, H)) / 2}

  def step(p, h, x):  # the batch mean leaks into each row, as a batch norm would
    h = jnp.tanh(jnp.concatenate([x, h], -1) @ p["w"])
    h = h - 0.5 * jnp.mean(h, axis=0, keepdims=True)
    return h, h

  cell = rj.custom_cell(init, step, lambda s=(), d=jnp.float32: jnp.zeros((*s, H), d), name="mix")
  with pytest.raises(
    rj.CellCheckError, match=r"check 'lengths' failed in slot 'lengths'.*\[5, 2, 0\]"
  ):
    rj.check_cell(cell, I)


def test_a_step_that_changes_the_carry():
  cell = rj.elman(H)

  def fast_step(params, h, zx):
    h, res = cell.fast_step(params, h, zx)
    return jnp.concatenate([h, h], -1), res

  with pytest.raises(
    rj.CellCheckError,
    match=r"check 'carry' failed in slot 'fast_step': fast_step returned carry as \(3, 6\) "
    r"float64, given \(3, 3\)",
  ):
    rj.check_cell(cell._replace(fast_step=fast_step), I)
  shrinks = rj.custom_cell(
    lambda k, i: {"w": jnp.ones((i, H))},
    lambda p, h, x: (h[:, :2], h),
    lambda s=(), d=jnp.float32: jnp.zeros((*s, H), d),
    name="shrinks",
  )
  with pytest.raises(
    rj.CellCheckError,
    match=r"check 'carry' failed in slot 'step': step raised "
    r"ValueError: rnnjax.custom_cell\('shrinks'\)",
  ) as e:
    rj.check_cell(shrinks, I)
  assert isinstance(e.value.__cause__, ValueError)


def test_bad_arguments():
  with pytest.raises(TypeError, match=r"rnnjax.check_cell: cell must be an rnnjax Cell"):
    rj.check_cell("lstm", I)
  with pytest.raises(ValueError, match=r"batch_size and length must be at least 2, got 1 and 5"):
    rj.check_cell(rj.lstm(H), I, batch_size=1)
  with pytest.raises(TypeError, match=r"key must be a JAX PRNG key"):
    rj.check_cell(rj.lstm(H), I, key=0)
  with pytest.raises(ValueError, match=r"rtol must be a non-negative number"):
    rj.check_cell(rj.lstm(H), I, rtol=-1.0)


def test_a_wrong_state_diagonal_is_named():
  cell = rj.lstm(H)
  with pytest.raises(
    rj.CellCheckError,
    match=r"check 'state_diagonal' failed in slot 'state_diagonal': the closed-form "
    r"state_diagonal and the diagonal of jax.jacfwd of step differ at diag at index",
  ) as e:
    rj.check_cell(cell._replace(state_diagonal=_scaled(cell.state_diagonal, 0.99)), I)
  assert e.value.report["state_diagonal"].max_rel_err == pytest.approx(0.01, rel=1e-6)

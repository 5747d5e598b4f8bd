"""Bad input raises at trace time with a message that names the shapes and the fix;
empty input (T = 0 or B = 0) is no error and behaves as in lax.scan."""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import CELLS, assert_trees_close, f64

T, B, I, H = 6, 2, 3, 4


@pytest.fixture
def lstm(key):
  cell = rj.lstm(H)
  return cell, cell.init(key, I)


def test_wrong_feature_size(lstm):
  cell, params = lstm
  with pytest.raises(
    ValueError,
    match=r"xs has feature size 7 but params expect input_size 3 "
    r"\(xs.shape=\(6, 2, 7\), layout \[T, B, I\]\); init the cell "
    r"with cell.init\(key, 7\)",
  ):
    rj.scan(cell, params, jnp.zeros((T, B, 7)))


def test_wrong_rank(lstm):
  cell, params = lstm
  with pytest.raises(
    ValueError,
    match=r"xs must have rank 3 \[T, B, I\], got rank 2 with shape "
    r"\(6, 3\); add a batch axis \(xs\[:, None\]",
  ):
    rj.scan(cell, params, jnp.zeros((T, I)))
  with pytest.raises(ValueError, match=r"rank 3 \[B, T, I\], got rank 4"):
    rj.scan(cell, params, jnp.zeros((1, B, T, I)), time_major=False)


@pytest.mark.parametrize(
  ("dtype", "kind"), [(jnp.int32, "integer"), (jnp.complex64, "complex64"), (jnp.bool_, "bool")]
)
def test_non_float_inputs(lstm, dtype, kind):
  cell, params = lstm
  with pytest.raises(
    TypeError,
    match=rf"xs must be floating point, got {kind} dtype .*"
    r"token ids go through rj.embedding first",
  ):
    rj.scan(cell, params, jnp.zeros((T, B, I), dtype))


def test_carry_of_wrong_shape(lstm):
  cell, params = lstm
  bad = rj.LSTMCarry(jnp.zeros((B, H + 1)), jnp.zeros((B, H + 1)))
  with pytest.raises(
    ValueError,
    match=r"carry leaf has shape \(2, 5\) but batch B=2 and "
    r"hidden_size H=4 need \(2, 4\); use cell.initial_carry\(\(2,\)\)",
  ):
    rj.scan(cell, params, jnp.zeros((T, B, I)), bad)
  with pytest.raises(ValueError, match=r"carry has structure .* expects .*LSTMCarry"):
    rj.scan(cell, params, jnp.zeros((T, B, I)), jnp.zeros((B, H)))


def test_lengths_checks(lstm):
  cell, params = lstm
  xs = jnp.zeros((T, B, I))
  with pytest.raises(ValueError, match=r"lengths must have shape \(B,\) = \(2,\), got \(3,\)"):
    rj.scan(cell, params, xs, lengths=jnp.array([1, 2, 3]))
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\], got min -1 and max 2"):
    rj.scan(cell, params, xs, lengths=jnp.array([-1, 2]))
  with pytest.raises(ValueError, match=r"lengths must lie in \[0, T=6\], got min 2 and max 9"):
    rj.scan(cell, params, xs, lengths=np.array([9, 2]))
  with pytest.raises(TypeError, match=r"lengths must be integers, got dtype float"):
    rj.scan(cell, params, xs, lengths=jnp.array([1.0, 2.0]))


def test_errors_raise_at_trace_time(lstm):
  """Under jit the same checks fire while tracing, before any compute."""
  cell, params = lstm
  f = jax.jit(lambda x: rj.scan(cell, params, x)[1])
  with pytest.raises(ValueError, match="feature size 5"):
    jax.eval_shape(f, jax.ShapeDtypeStruct((T, B, 5), jnp.float32))


def test_unknown_options(lstm):
  cell, params = lstm
  xs = jnp.zeros((T, B, I))
  with pytest.raises(
    ValueError, match=r"unknown backward 'fast'; expected one of \('auto', 'bptt'"
  ):
    rj.scan(cell, params, xs, backward="fast")
  with pytest.raises(ValueError, match=r"unroll must be a positive int, got 0"):
    rj.scan(cell, params, xs, unroll=0)
  with pytest.raises(
    TypeError, match=r"cell must be an rnnjax Cell \(e.g. rj.lstm\(H\)\), got function"
  ):
    rj.scan(lambda c, x: (c, x), params, xs)


def test_checkpoint_every_must_be_a_positive_int(lstm):
  """Checked whenever it is given, not only with backward="checkpoint"."""
  cell, params = lstm
  xs = jnp.zeros((T, B, I))
  for backward in ("checkpoint", "bptt", "autodiff"):
    for bad in (0, -2, 2.5, True):
      with pytest.raises(
        ValueError, match=rf"rnnjax.scan: checkpoint_every must be a positive int, got {bad!r}"
      ):
        rj.scan(cell, params, xs, backward=backward, checkpoint_every=bad)
  _, ys = rj.scan(cell, params, xs, backward="checkpoint", checkpoint_every=T + 3)  # k > T is fine
  assert ys.shape == (T, B, H)


@pytest.mark.parametrize("rate", [1.0, 1.5, -0.1, "0.5"])
def test_stacked_dropout_rate_is_checked_even_for_one_layer(lstm, rate):
  xs = jnp.zeros((T, B, I))
  for layers in ([lstm], [lstm, (rj.lstm(H), rj.lstm(H).init(jax.random.key(1), H))]):
    with pytest.raises(
      ValueError,
      match=rf"rnnjax.stacked: dropout_rate must be a number in \[0, 1\), got {rate!r}; "
      r"pass 0.0 to disable it",
    ):
      rj.stacked(layers, xs, dropout_rate=rate, key=jax.random.key(0))


@pytest.mark.parametrize("name", sorted(CELLS))
def test_init_needs_a_prng_key(name):
  cell = CELLS[name](H)
  what = cell.name
  with pytest.raises(
    TypeError,
    match=rf"rnnjax.{what}.init: key must be a JAX PRNG key, got int 0; pass "
    r"jax.random.key\(0\)",
  ):
    cell.init(0, 4)
  with pytest.raises(
    TypeError, match=r"key must be a JAX PRNG key, got an array of dtype float32 and shape \(2,\)"
  ):
    cell.init(jnp.zeros(2, jnp.float32), 4)
  # typed keys, legacy uint32 keys and vmapped keys all pass
  shape = cell.init(jax.random.key(0), 4).w_x.shape
  assert cell.init(jax.random.PRNGKey(0), 4).w_x.shape == shape
  batched = jax.vmap(cell.init, in_axes=(0, None))(jax.random.split(jax.random.key(0), 2), 4)
  assert batched.w_x.shape == (2, *shape)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_initial_carry_needs_a_tuple(name):
  cell = CELLS[name](H)
  what = f"rnnjax.{cell.name}.initial_carry"
  with pytest.raises(
    TypeError,
    match=rf"{what}: batch_shape must be a tuple of ints, got the int 8; use \(8,\) for a "
    r"batch of 8, or \(\) for one sequence",
  ):
    cell.initial_carry(8)
  with pytest.raises(TypeError, match=r"batch_shape must be a tuple of ints such as \(B,\)"):
    cell.initial_carry((2.0,))
  with pytest.raises(ValueError, match=r"batch_shape must have non-negative sizes, got \(2, -1\)"):
    cell.initial_carry((2, -1))
  for shape in [(), (3,), [2, 3], (np.int64(2),), (0,)]:
    leaves = jax.tree.leaves(cell.initial_carry(shape))
    assert all(leaf.shape == (*tuple(shape), H) for leaf in leaves)


# ------------------------------------------------------- params against the cell


def test_params_of_another_cell_name_both(key):
  """GRU params given to an LSTM cell: the error names the cell, the params' type,
  the leaf and both shapes, before the step runs."""
  cell = rj.lstm(H)
  gru_params = rj.gru(H).init(key, I)
  with pytest.raises(
    ValueError,
    match=r"rnnjax.scan: params do not fit rnnjax.lstm\(4, forget_bias=1.0\) with input_size 3: "
    r"leaf .w_x of the given GRUParams has shape \(3, 12\), but the cell's LSTMParams needs "
    r"\(3, 16\); pass params from cell.init\(key, 3\) of this same cell",
  ):
    rj.scan(cell, gru_params, jnp.zeros((T, B, I)))
  with pytest.raises(ValueError, match=r"leaf .w_h of the given ElmanParams has shape \(4, 4\)"):
    rj.scan(
      rj.gru(H), rj.elman(H).init(key, I)._replace(w_x=jnp.zeros((I, 3 * H))), jnp.zeros((T, B, I))
    )
  # the same check under jit, at trace time, and through the layers
  f = jax.jit(lambda p, x: rj.scan(cell, p, x)[1])
  with pytest.raises(ValueError, match=r"GRUParams has shape \(3, 12\)"):
    jax.eval_shape(f, gru_params, jax.ShapeDtypeStruct((T, B, I), jnp.float32))
  with pytest.raises(ValueError, match=r"params do not fit rnnjax.lstm"):
    rj.stacked([(cell, gru_params)], jnp.zeros((T, B, I)))


def test_params_missing_a_field_or_of_a_wrong_shape(key):
  cell = rj.gru(H, reset="after")
  params = cell.init(key, I)
  xs = jnp.zeros((T, B, I))
  with pytest.raises(
    ValueError,
    match=r"params do not fit rnnjax.gru\(4, reset='after'\): the cell's GRUParams has a leaf "
    r".b_hn of shape \(4,\) that the given GRUParams lacks \(its leaves: .b, .w_h, .w_x\)",
  ):
    rj.scan(cell, params._replace(b_hn=None), xs)
  with pytest.raises(ValueError, match=r"leaf .b_hn of the given GRUParams has shape \(5,\)"):
    rj.scan(cell, params._replace(b_hn=jnp.zeros(H + 1)), xs)
  with pytest.raises(ValueError, match=r"leaf .b of the given GRUParams has shape \(12, 1\)"):
    rj.scan(cell, params._replace(b=params.b[:, None]), xs)
  # a dict is not the cell's params: its leaves sit at other paths
  with pytest.raises(ValueError, match=r"has a leaf .w_x of shape \(3, 12\) that the given dict"):
    rj.scan(cell, params._asdict(), xs)
  # "after" params (with b_hn) given to a "before" GRU: b_hn would be ignored
  with pytest.raises(
    ValueError,
    match=r"params do not fit rnnjax.gru\(4, reset='before'\): the given GRUParams has leaves "
    r".b_hn that this cell's init does not make",
  ):
    rj.scan(rj.gru(H), params, xs)


class _LSTMWeights(NamedTuple):  # another NamedTuple with the fields of rj.LSTMParams
  w_x: jax.Array
  w_h: jax.Array
  b: jax.Array


def test_params_of_another_type_with_the_same_fields_pass(key):
  """The tree type is compared loosely: the leaves by path and shape."""
  cell = rj.lstm(H)
  params = f64(cell.init(key, I))
  xs = jax.random.normal(key, (T, B, I), jnp.float64)
  want = rj.scan(cell, params, xs)
  assert_trees_close(rj.scan(cell, _LSTMWeights(*params), xs), want, rtol=0, atol=0)
  # and float64 params for float32 init, as every float64 test does: dtypes are not compared
  assert rj.scan(cell, params, xs)[1].dtype == jnp.float64


# ----------------------------------------------------------------- empty input


@pytest.mark.parametrize("backward", ["bptt", "autodiff", "checkpoint"])
@pytest.mark.parametrize(("T_", "B_"), [(0, 2), (3, 0), (0, 0)])
@pytest.mark.parametrize("name", ["elman-tanh", "lstm"])
def test_empty_inputs_give_the_initial_carry_and_empty_outputs(name, T_, B_, backward, key):
  """As lax.scan: T = 0 returns the initial carry and ys [0, B, H]; B = 0 an
  empty carry and ys [T, 0, H]. Gradients: zero for params and xs, and the
  carry's gradient passes straight through to the initial carry."""
  cell = CELLS[name](H)
  params = f64(cell.init(key, I))
  xs = jax.random.normal(key, (T_, B_, I), jnp.float64)
  carry0 = jax.tree.map(lambda c: c + 0.5, cell.initial_carry((B_,), jnp.float64))
  w = jax.tree.map(lambda c: jnp.arange(c.size, dtype=c.dtype).reshape(c.shape) + 1, carry0)

  def loss(params, xs, carry0, **kw):
    carry, ys = rj.scan(cell, params, xs, carry0, backward=backward, **kw)
    leaves = zip(jax.tree.leaves(carry), jax.tree.leaves(w), strict=True)
    return jnp.sum(ys**2) + sum(jnp.sum(c * v) for c, v in leaves)

  carry, ys = rj.scan(cell, params, xs, carry0, backward=backward)
  assert ys.shape == (T_, B_, H) and ys.dtype == jnp.float64
  assert_trees_close(carry, carry0, rtol=0, atol=0)
  for kw in ({}, {"reverse": True}, {"lengths": jnp.zeros(B_, jnp.int32)}):
    dp, dx, dc = jax.jit(jax.grad(lambda *a, kw=kw: loss(*a, **kw), argnums=(0, 1, 2)))(
      params, xs, carry0
    )
    assert_trees_close(dp, jax.tree.map(jnp.zeros_like, params), rtol=0, atol=0)
    assert dx.shape == xs.shape
    assert_trees_close(dc, w, rtol=0, atol=0)
  # batch-major too
  _, ys_bm = rj.scan(cell, params, jnp.swapaxes(xs, 0, 1), carry0, time_major=False)
  assert ys_bm.shape == (B_, T_, H)

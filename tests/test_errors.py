"""Bad input raises at trace time with a message that names the shapes and the fix."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

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

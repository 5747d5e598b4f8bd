"""A cell is static to JAX: a pytree with no leaves, hashable, a valid jit argument."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests.helpers import CELLS, assert_trees_close, f64

T, B, I, H = 4, 2, 3, 5


@pytest.mark.parametrize("name", sorted(CELLS))
def test_jit_takes_a_cell_as_an_argument(name, key):
  cell = CELLS[name](H)
  params = f64(cell.init(key, I))
  xs = jax.random.normal(jax.random.key(1), (T, B, I), jnp.float64)
  want = rj.scan(cell, params, xs)
  assert_trees_close(jax.jit(rj.scan)(cell, params, xs), want, rtol=1e-13, atol=1e-14)
  # and through a gradient, with the cell among the traced arguments
  g = jax.jit(jax.grad(lambda c, p, x: jnp.sum(rj.scan(c, p, x)[1] ** 2), argnums=1))
  g_ref = jax.grad(lambda p: jnp.sum(rj.scan(cell, p, xs)[1] ** 2))(params)
  assert_trees_close(g(cell, params, xs), g_ref, rtol=1e-12, atol=1e-14)


def test_a_cell_is_a_pytree_without_leaves():
  cell = rj.lstm(H)
  assert jax.tree.leaves(cell) == []
  assert jax.tree.leaves([cell, jnp.ones(2)])[0].shape == (2,)
  assert jax.tree.map(lambda a: a + 1, cell) is cell
  # still the NamedTuple: attributes, _replace, isinstance and repr are as before
  assert isinstance(cell, rj.Cell)
  assert (cell.name, cell.hidden_size, cell.gates, cell.state_size) == ("lstm", H, 4, 2 * H)
  bare = cell._replace(state_jacobian=None)
  assert isinstance(bare, rj.Cell) and bare.state_jacobian is None
  assert jax.tree.leaves(bare) == []
  assert repr(cell) == "rnnjax.lstm(5, forget_bias=1.0)"
  assert repr(rj.gru(3, reset="after")) == "rnnjax.gru(3, reset='after')"


@pytest.mark.parametrize("bidirectional", [False, True])
def test_tree_map_over_layers_maps_only_the_params(bidirectional, key):
  cells = [rj.gru(3), rj.lstm(2), rj.elman(4, "relu")]
  layers = rj.init_stacked(key, cells, I, bidirectional)
  doubled = jax.tree.map(lambda a: a * 2, layers)
  assert jax.tree.structure(doubled) == jax.tree.structure(layers)
  for got, old in zip(jax.tree.leaves(doubled), jax.tree.leaves(layers), strict=True):
    np.testing.assert_array_equal(got, 2 * old)
  flat_new = doubled if not bidirectional else [d for pair in doubled for d in pair]
  flat_old = layers if not bidirectional else [d for pair in layers for d in pair]
  for (cell, params), (old_cell, old_params) in zip(flat_new, flat_old, strict=True):
    assert cell is old_cell
    assert type(params) is type(old_params)
  # the doubled layers still run
  xs = jnp.ones((T, B, I))
  _, ys = rj.stacked(doubled, xs)
  assert ys.shape == (T, B, (2 if bidirectional else 1) * 4)


def test_equal_cells_compile_once_and_different_cells_again(key):
  """The cell is part of jit's cache key through its hash and equality: the same
  factory arguments give the same cell; a new function or option is a new cell."""
  traces = []

  @jax.jit
  def last(cell, params, xs):
    traces.append(cell)
    return rj.scan(cell, params, xs)[1][-1]

  cell = rj.lstm(H)
  params = cell.init(key, I)
  xs = jnp.ones((T, B, I))
  y = last(cell, params, xs)
  last(cell, params, 2 * xs)
  assert rj.lstm(H) == cell and hash(rj.lstm(H)) == hash(cell)
  last(rj.lstm(H), params, xs)
  assert len(traces) == 1
  # a different function, a different option, a different size: each its own trace
  bare = cell._replace(state_jacobian=None)
  assert bare != cell
  np.testing.assert_array_equal(last(bare, params, xs), y)
  assert len(traces) == 2
  last(rj.lstm(H, forget_bias=0.0), params, xs)
  assert len(traces) == 3
  other = rj.lstm(H + 1)
  last(other, other.init(key, I), xs)
  assert len(traces) == 4
  assert rj.lstm(H) != rj.lstm(H + 1) and rj.gru(H) != rj.gru(H, reset="after")


def test_jit_of_the_jacobian_tools_and_layers_with_cells(key):
  """Static-argnum users keep working, and a layer list is one jit argument."""
  cell = rj.elman(H)
  layers = rj.init_stacked(key, [cell, rj.gru(H)], I)
  xs = jnp.ones((T, B, I))
  run = jax.jit(lambda layers, xs: rj.stacked(layers, xs)[1])
  np.testing.assert_allclose(run(layers, xs), rj.stacked(layers, xs)[1], rtol=1e-6)
  params = cell.init(key, I)
  J = rj.jacobian.step_jacobians(cell, params, jnp.ones((T, I)))
  J_again = jax.jit(rj.jacobian.step_jacobians)(cell, params, jnp.ones((T, I)))
  np.testing.assert_array_equal(J, J_again)
  assert J.shape[-2:] == (H, H)

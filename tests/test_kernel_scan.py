"""The kernel's scan (each step's input read a step ahead) equals ``lax.scan``.

The tests' steps are small, so each test lowers the size below which the
kernel scan is plain ``lax.scan`` (`kernel.PREFETCH_MIN_ELEMENTS`) to exercise
the read-ahead path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from rnnjax._src import kernel


def _step(carry, x):
  """A carry pytree, an xs pytree with a None leaf, two outputs."""
  h, n = carry
  a, none, m = x
  assert none is None
  h = jnp.tanh(h * 0.9 + a @ jnp.ones((a.shape[-1], h.shape[-1])) * 0.1) * m[:, None]
  return (h, n + jnp.sum(h)), (h, 2.0 * a)


@pytest.fixture
def read_ahead(monkeypatch):
  monkeypatch.setattr(kernel, "PREFETCH_MIN_ELEMENTS", 0)


@pytest.mark.parametrize(("T", "reverse", "unroll"), [(5, False, 1), (5, True, 2), (1, True, 1)])
def test_values_and_gradients_equal_lax_scan(T, reverse, unroll, read_ahead):
  k = jax.random.split(jax.random.key(0), 3)
  xs = (
    jax.random.normal(k[0], (T, 2, 3), jnp.float64),
    None,
    (jax.random.uniform(k[1], (T, 2)) > 0.3).astype(jnp.float64),
  )
  init = (jax.random.normal(k[2], (2, 4), jnp.float64), jnp.zeros((), jnp.float64))

  def run(scan):
    def loss(init, xs):
      (h, n), (hs, a2) = scan(_step, init, xs, reverse=reverse, unroll=unroll)
      return jnp.sum(h**2) + n + jnp.sum(hs * jnp.arange(T)[:, None, None]) + jnp.sum(a2**3)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(init, xs)

  got, want = run(kernel.scan), run(lax.scan)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-13, atol=1e-14)


def _carried_shapes(xs):
  jaxpr = jax.make_jaxpr(lambda xs: kernel.scan(lambda c, x: (c + x, c), jnp.zeros((2, 3)), xs))(xs)
  (scan,) = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
  carried = [v.aval.shape for v in scan.invars[scan.params["num_consts"] :]]
  return carried[: scan.params["num_carry"]]


def test_reads_the_step_input_from_the_carry_on_cpu(read_ahead):
  """On CPU the loop's carry holds the step's input (what makes it fast there)."""
  carried = _carried_shapes(jnp.ones((4, 2, 3)))
  if jax.default_backend() == "cpu":
    assert carried == [(2, 3), (2, 3), ()]  # the carry, x_t, t
  else:
    assert carried == [(2, 3)]


def test_small_steps_are_lax_scan():
  """Below PREFETCH_MIN_ELEMENTS a step's input is sliced in the step, as lax.scan does."""
  assert kernel.PREFETCH_MIN_ELEMENTS > 6
  assert _carried_shapes(jnp.ones((4, 2, 3))) == [(2, 3)]


def test_empty_time_axis_is_lax_scan():
  c, ys = kernel.scan(lambda c, x: (c + x, c), jnp.zeros(3), jnp.zeros((0, 3)))
  assert ys.shape == (0, 3) and not c.any()


def test_leaves_of_different_lengths_are_refused():
  with pytest.raises(
    ValueError, match=r"same leading \(time\) axis, got shapes \[\(4, 2\), \(3, 2\)\]"
  ):
    kernel.scan(lambda c, x: (c, None), 0.0, (jnp.zeros((4, 2)), jnp.zeros((3, 2))))

"""rj.scan(kernel="pallas") against kernel="xla", in Pallas interpret mode on the CPU.

The shapes are tiny (the kernel pads H = 6 to 16 and B = 3 to 16, as Triton
needs), so each case costs one interpret-mode compile of the forward and the
backward kernel. One representative combination of lengths and direction per
cell, not a product: the mask and the reversal are shared code.
"""

import jax
import jax.numpy as jnp
import pytest

import rnnjax as rj
from rnnjax._src import pallas_rnn
from tests.helpers import CELLS, assert_trees_close, f64

T, B, I, H = 5, 3, 4, 6
LENGTHS = jnp.array([5, 2, 0])
KERNELS = ("pallas", "xla")


def _setup(cell, key):
  k1, k2, k3 = jax.random.split(key, 3)
  params = f64(cell.init(k1, I))
  params = params._replace(b=params.b + 0.1 * jax.random.normal(k3, params.b.shape))
  if getattr(params, "b_hn", None) is not None:  # the GRU's reset-after bias starts at 0
    params = params._replace(b_hn=0.3 * jax.random.normal(k1, params.b_hn.shape))
  xs = jax.random.normal(k2, (T, B, I))
  carry0 = jax.tree.map(
    lambda c: 0.3 * jax.random.normal(k3, c.shape), cell.initial_carry((B,), jnp.float64)
  )
  return params, xs, carry0


def _values_and_grads(cell, params, xs, carry0, **kw):
  """For each kernel, ``(carry, ys)`` and the gradients for params, xs and the
  initial carry of a loss that reads every output and the last carry (both
  kernels in one jit: one compile)."""

  def loss(p, x, c0, kernel):
    carry, ys = rj.scan(cell, p, x, c0, kernel=kernel, **kw)
    leaves = jax.tree.leaves(carry)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c * c) for c in leaves), (carry, ys)

  def both(p, x, c0):
    return [jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(p, x, c0, k) for k in KERNELS]

  return [(out, grads) for (_, out), grads in jax.jit(both)(params, xs, carry0)]


@pytest.mark.parametrize(
  ("name", "options"),
  [
    ("lstm", {"lengths": LENGTHS, "reverse": True}),
    ("gru-before", {}),
    ("gru-after", {"lengths": LENGTHS}),
    ("elman-tanh", {"reverse": True}),
  ],
)
def test_pallas_equals_xla(name, options, key):
  """Values (carry and ys, zero past each length) and gradients (params, xs,
  initial carry) of the Pallas kernels equal rj.scan's XLA path in float64."""
  cell = CELLS[name](H)
  params, xs, carry0 = _setup(cell, key)
  got, want = _values_and_grads(cell, params, xs, carry0, **options)
  assert_trees_close(got, want)
  assert all(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(want[1]))  # none all zero


def _calls(cell, kernel, **kw):
  params = cell.init(jax.random.key(0), I)
  jaxpr = jax.make_jaxpr(lambda p, x: rj.scan(cell, p, x, kernel=kernel, **kw))(
    params, jnp.ones((T, B, I))
  )
  return str(jaxpr).count("pallas_call")


def test_auto_is_xla_on_cpu():
  """``"auto"`` runs the XLA scan until a GPU measurement lists a win, and
  falls back to it for a cell without a Pallas kernel."""
  assert _calls(rj.lstm(H), "auto") == 0
  assert _calls(rj.mgu(H), "auto") == 0
  assert _calls(rj.lstm(H), "xla") == 0
  assert _calls(rj.lstm(H), "pallas") == 1


def test_errors_name_the_fix():
  cell = rj.lstm(H)
  params, xs = cell.init(jax.random.key(0), I), jnp.ones((T, B, I))
  with pytest.raises(
    ValueError,
    match=r"rnnjax.scan: unknown kernel 'cuda'; expected one of \('auto', 'xla', 'pallas', 'ffi'\)",
  ):
    rj.scan(cell, params, xs, kernel="cuda")
  mgu = rj.mgu(H)
  with pytest.raises(
    ValueError,
    match=r"rnnjax.scan\(kernel='pallas'\): rnnjax.mgu\(6\) has no Pallas kernel; the "
    r"supported cells are rj.lstm, rj.gru, rj.elman; use kernel='xla'",
  ):
    rj.scan(mgu, mgu.init(jax.random.key(0), I), xs, kernel="pallas")
  with pytest.raises(ValueError, match=r"backward='autodiff' does not apply; pass backward='auto'"):
    rj.scan(cell, params, xs, kernel="pallas", backward="autodiff")
  resets = jnp.zeros((T, B), bool)
  with pytest.raises(
    ValueError, match=r"resets are not supported by the Pallas kernel; use kernel"
  ):
    rj.scan(cell, params, xs, kernel="pallas", resets=resets)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_to_triton(dtype):
  """Without a GPU the kernels still lower to Triton IR (power-of-two blocks,
  ops the Triton lowering supports): forward and backward, each supported
  cell, with lengths. Compiling that IR to PTX needs a GPU."""
  mask = jnp.arange(T)[:, None] < LENGTHS[None]
  for cell in (rj.lstm(H, dtype=dtype), rj.gru(H, "before"), rj.gru(H, "after"), rj.elman(H)):
    params = cell.init(jax.random.key(0), I)
    carry0 = cell.initial_carry((B,), cell.dtype or jnp.float32)

    def loss(p, x, c0, cell=cell):
      _, ys = pallas_rnn.pallas_scan(cell, p, x, c0, mask, interpret=False)
      return jnp.sum(ys.astype(jnp.float32) ** 2)

    traced = jax.jit(jax.grad(loss, (0, 1, 2))).trace(params, jnp.ones((T, B, I)), carry0)
    try:
      text = traced.lower(lowering_platforms=("cuda",)).as_text()
    except RuntimeError as e:  # a newer jax/jaxlib compiles the Triton IR while lowering
      if not any(s in str(e) for s in ("Triton compilation handler", "No supported GPU")):
        raise
      pytest.skip(f"this jaxlib needs a GPU to lower Pallas Triton kernels: {e}")
    assert text.count("__gpu$xla.gpu.triton") == 2, cell  # one forward, one backward launch
    if dtype == jnp.bfloat16:
      break  # the bfloat16 variant: the LSTM only


def test_two_programs_and_a_weight_read_every_step(key):
  """B = 17 pads to two programs of 16 sequences, and ``resident=False`` reads w_h
  from memory at every step (the path for large H): values and gradients still
  equal the XLA scan's, with lengths."""
  cell, n = rj.lstm(H), 17
  params, _, _ = _setup(cell, key)
  xs = jax.random.normal(jax.random.key(3), (T, n, I))
  carry0 = jax.tree.map(
    lambda c: 0.3 * jax.random.normal(jax.random.key(4), c.shape), cell.initial_carry((n,))
  )
  lengths = jnp.arange(n) % (T + 1)
  mask = jnp.arange(T)[:, None] < lengths[None, :]

  def loss(p, x, c0, pallas):
    if pallas:
      carry, ys = pallas_rnn.pallas_scan(cell, p, x, c0, mask, resident=False)
    else:
      carry, ys = rj.scan(cell, p, x, c0, lengths=lengths, kernel="xla")
    return jnp.sum(jnp.sin(ys)) + jnp.sum(carry.c**2), (carry, ys)

  run = jax.jit(
    lambda p, x, c0: [
      jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(p, x, c0, k) for k in (True, False)
    ]
  )
  (got, got_grads), (want, want_grads) = [(out, g) for (_, out), g in run(params, xs, carry0)]
  assert_trees_close(got, want)
  assert_trees_close(got_grads, want_grads)

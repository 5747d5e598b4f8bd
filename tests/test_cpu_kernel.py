"""rj.scan(kernel="ffi"), the C++ CPU kernel, against kernel="xla", the reference.

Values and gradients (params, inputs, initial carry) with lengths and reverse:
float64 at H = 5 runs the kernel's plain C++ loops; float32 at H = 32 and 128
its AVX-512 GEMM (one and two threads). Without the extension the equality
tests skip, except under CI=true, where they fail; the fallback tests run
either way (CI runs this file again with RNNJAX_DISABLE_FFI=1).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax._src import cpu_kernel
from tests.helpers import CELLS, assert_trees_close

T, B, I = 5, 3, 4
LENGTHS = jnp.array([5, 2, 0])
DISABLED = os.environ.get(cpu_kernel.DISABLE_ENV, "") not in ("", "0")

needs_ffi = pytest.mark.skipif(
  DISABLED or (not cpu_kernel.available() and os.environ.get("CI") != "true"),
  reason=f"the FFI kernel cannot run: {cpu_kernel.unavailable_reason()}",
)


def _setup(cell, key, dtype, batch=B):
  k1, k2, k3 = jax.random.split(key, 3)
  params = jax.tree.map(lambda a: a.astype(dtype), cell.init(k1, I))
  params = params._replace(b=params.b + 0.1 * jax.random.normal(k3, params.b.shape, dtype))
  if getattr(params, "b_hn", None) is not None:  # the GRU's reset-after bias starts at 0
    params = params._replace(b_hn=0.3 * jax.random.normal(k1, params.b_hn.shape, dtype))
  xs = jax.random.normal(k2, (T, batch, I), dtype)
  carry0 = jax.tree.map(
    lambda c: 0.3 * jax.random.normal(k3, c.shape, dtype), cell.initial_carry((batch,), dtype)
  )
  return params, xs, carry0


def _values_and_grads(cell, params, xs, carry0, kernels=("ffi", "xla"), **kw):
  """Per kernel, ``(carry, ys)`` and the gradients for params, xs and the initial
  carry of a loss that reads every output and the last carry (one jit)."""

  def loss(p, x, c0, kernel):
    carry, ys = rj.scan(cell, p, x, c0, kernel=kernel, **kw)
    leaves = jax.tree.leaves(carry)
    return jnp.sum(jnp.sin(ys) * ys) + sum(jnp.sum(c * c) for c in leaves), (carry, ys)

  def each(p, x, c0):
    return [jax.value_and_grad(loss, (0, 1, 2), has_aux=True)(p, x, c0, k) for k in kernels]

  return [(out, grads) for (_, out), grads in jax.jit(each)(params, xs, carry0)]


CASES = ["lstm", "gru-after", "elman-tanh", "elman-relu"]


@needs_ffi
@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize(
  ("dtype", "H", "options"),
  [
    (jnp.float64, 5, {"lengths": LENGTHS, "reverse": True}),
    (jnp.float64, 5, {}),
    (jnp.float32, 32, {"lengths": LENGTHS, "reverse": True}),
  ],
)
def test_ffi_equals_xla(name, dtype, H, options, key):
  cell = CELLS[name](H)
  params, xs, carry0 = _setup(cell, key, dtype)
  (got, dgot), (want, dwant) = _values_and_grads(cell, params, xs, carry0, **options)
  if dtype == jnp.float64:  # the same operations in another order: rounding only
    assert_trees_close(got, want, rtol=1e-12, atol=1e-13)
    assert_trees_close(dgot, dwant, rtol=1e-11, atol=1e-12)
  else:  # float32, and the kernel's own exp: a few ulps per step
    assert_trees_close(got, want, rtol=2e-5, atol=2e-6)
    assert_trees_close(dgot, dwant, rtol=1e-4, atol=2e-5)
  assert np.any(np.asarray(got[1]) != 0)  # not an empty comparison


@needs_ffi
@pytest.mark.parametrize("name", ["lstm", "gru-after", "elman-sigmoid"])
def test_two_threads_and_the_packed_panels_equal_xla(name, key):
  """B·H·G·H >= 2^20 splits the hidden units between two threads; H = 128 uses
  the 64-unit panels of the backward GEMM (and of the Elman forward)."""
  H, batch = 128, 64
  cell = rj.elman(H, "sigmoid") if name == "elman-sigmoid" else CELLS[name](H)
  params, xs, carry0 = _setup(cell, key, jnp.float32, batch)
  lengths = jnp.arange(batch) % (T + 1)
  (got, dgot), (want, dwant) = _values_and_grads(
    cell, params, xs, carry0, lengths=lengths, reverse=True
  )
  assert_trees_close(got, want, rtol=2e-5, atol=2e-6)
  assert_trees_close(dgot, dwant, rtol=2e-4, atol=2e-5)


@needs_ffi
def test_ffi_runs_under_jit_and_vmap_and_on_empty_inputs(key):
  cell = rj.lstm(5)
  params, xs, _ = _setup(cell, key, jnp.float64)
  f = jax.vmap(lambda x: rj.scan(cell, params, x, kernel="ffi")[1])
  g = jax.vmap(lambda x: rj.scan(cell, params, x, kernel="xla")[1])
  stacked = jnp.stack([xs, 2 * xs])
  assert "rnnjax_cpu_forward" in str(jax.make_jaxpr(f)(stacked))
  assert_trees_close(jax.jit(f)(stacked), g(stacked))
  carry, ys = rj.scan(cell, params, xs[:0], kernel="ffi")
  assert ys.shape == (0, B, 5) and carry.h.shape == (B, 5)


def _jaxpr(cell, params, xs, kernel):
  return str(jax.make_jaxpr(lambda p: rj.scan(cell, p, xs, kernel=kernel)[1])(params))


def test_auto_picks_ffi_only_where_listed_and_available(key, monkeypatch):
  """``kernel="auto"`` follows AUTO_WINS; with the kernel unavailable
  (RNNJAX_DISABLE_FFI=1, or not built) it falls back to the XLA scan, with
  the same values as ``kernel="xla"``."""
  cell = rj.lstm(16)
  params, xs, _ = _setup(cell, key, jnp.float32)
  monkeypatch.setattr(cpu_kernel, "AUTO_WINS", (("lstm", 16, B),))
  assert "rnnjax_cpu" in _jaxpr(cell, params, xs, "auto") or not cpu_kernel.available()
  monkeypatch.setattr(cpu_kernel, "AUTO_WINS", (("lstm", 32, B),))  # H = 16 is not listed
  assert "rnnjax_cpu" not in _jaxpr(cell, params, xs, "auto")
  monkeypatch.setattr(cpu_kernel, "AUTO_WINS", (("lstm", 16, B),))
  monkeypatch.setenv(cpu_kernel.DISABLE_ENV, "1")
  assert not cpu_kernel.available()
  assert "rnnjax_cpu" not in _jaxpr(cell, params, xs, "auto")
  _, ys = rj.scan(cell, params, xs, kernel="auto", lengths=LENGTHS)
  _, want = rj.scan(cell, params, xs, kernel="xla", lengths=LENGTHS)
  np.testing.assert_array_equal(ys, want)
  with pytest.raises(
    ValueError,
    match=r"rnnjax.scan\(kernel='ffi'\): the C\+\+ CPU kernel cannot run: it is disabled by the "
    r"environment variable RNNJAX_DISABLE_FFI=1; unset it; or use kernel='xla'",
  ):
    rj.scan(cell, params, xs, kernel="ffi")


def test_unavailable_extension_falls_back(key, monkeypatch):
  """As if the extension were not built (no compiler at install time)."""
  monkeypatch.delenv(cpu_kernel.DISABLE_ENV, raising=False)
  monkeypatch.setattr(cpu_kernel, "_load", lambda: (None, "the extension is not built (test)"))
  monkeypatch.setattr(cpu_kernel, "AUTO_WINS", (("lstm", 1, 100),))
  cell = rj.lstm(6)
  params, xs, _ = _setup(cell, key, jnp.float64)
  assert not cpu_kernel.available()
  assert "rnnjax_cpu" not in _jaxpr(cell, params, xs, "auto")
  with pytest.raises(
    ValueError,
    match=r"cannot run: the extension is not built \(test\); build it by reinstalling rnnjax "
    r"with a C\+\+ compiler present \(pip install -e \. compiles rnnjax/_src/csrc\); or use "
    r"kernel='xla'",
  ):
    rj.scan(cell, params, xs, kernel="ffi")


@needs_ffi
def test_ffi_refuses_what_it_does_not_support(key):
  xs = jnp.ones((T, B, I), jnp.float32)
  before = rj.gru(6)  # reset="before"
  with pytest.raises(
    ValueError,
    match=r"rnnjax.scan\(kernel='ffi'\): rnnjax.gru\(6, reset='before'\) has no C\+\+ step; "
    r"the supported cells are rj.lstm, rj.gru\(H, reset='after'\) and rj.elman; use kernel='xla'",
  ):
    rj.scan(before, before.init(jax.random.key(0), I), xs, kernel="ffi")
  cell = rj.lstm(6)
  params = cell.init(key, I)
  with pytest.raises(ValueError, match=r"backward='autodiff' does not apply; pass backward='auto'"):
    rj.scan(cell, params, xs, kernel="ffi", backward="autodiff")
  with pytest.raises(ValueError, match=r"resets are not supported by the FFI kernel; use kernel="):
    rj.scan(cell, params, xs, kernel="ffi", resets=jnp.zeros((T, B), bool))
  half = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
  with pytest.raises(ValueError, match=r"computes in float32 or float64, not bfloat16; use kernel"):
    rj.scan(cell, half, xs.astype(jnp.bfloat16), kernel="ffi")
  with pytest.raises(ValueError, match=r"unknown kernel 'c\+\+'; expected one of"):
    rj.scan(cell, params, xs, kernel="c++")


def test_auto_wins_name_supported_steps():
  for step, min_h, max_b in cpu_kernel.AUTO_WINS:
    assert step in cpu_kernel.STEPS and min_h >= 1 and max_b >= 1

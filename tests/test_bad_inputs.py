"""Property-based bad-input suite over the public API (issue 20).

Every bad input must end either in a clear error at trace time, raised from
rnnjax's own code, whose message names the call and the argument, or in a
documented value: traced lengths clipped to [0, T], empty outputs for empty
axes, NaN in a valid position propagating within its own sequence only. NaN or
Inf in padding never reaches a value or a gradient.

Budgets: ``HYPOTHESIS_PROFILE=ci`` (the default: a few examples each, for
``make test``) or ``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``: many more). The
profiles apply to this file's tests only. Shapes are few and fixed where a
probe compiles, and the jitted functions are cached across examples, so a
probe compiles once per (function, cell) and not once per example.
"""

import os
import traceback
from functools import cache, partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnjax as rj
import rnnjax.nnx
from rnnjax import interop
from rnnjax import jacobian as jac
from tests.helpers import assert_trees_close, f64

# The suite's budget is small and derandomised (the same examples on every run, so a
# red CI is a change's doing); `make fuzz` draws 300 fresh examples per property.
settings.register_profile(
  "rnnjax-ci",
  max_examples=10,
  deadline=None,
  derandomize=True,
  suppress_health_check=list(HealthCheck),
)
settings.register_profile(
  "rnnjax-fuzz", max_examples=300, deadline=None, suppress_health_check=list(HealthCheck)
)
FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"
PROFILE = settings.get_profile("rnnjax-fuzz" if FUZZ else "rnnjax-ci")
probe = settings(PROFILE)
# probes that compile a gradient per example: fewer examples
heavy = settings(PROFILE, max_examples=60 if FUZZ else 4)

T, B, I = 4, 3, 2
RNNJAX_DIR = os.path.dirname(os.path.abspath(rj.__file__))


def _custom():
  def init(key, i):
    k1, k2 = jax.random.split(key)
    return {"w": 0.5 * jax.random.normal(k1, (i, 3)), "u": 0.5 * jax.random.normal(k2, (3, 3))}

  def step(p, c, x):
    h = jnp.tanh(x @ p["w"] + c @ p["u"])
    return h, h

  return rj.custom_cell(init, step, lambda s=(), d=jnp.float32: jnp.zeros((*s, 3), d))


CELLS = {"lstm": rj.lstm(3), "gru": rj.gru(3), "elman": rj.elman(3), "custom": _custom()}
OTHER = {"lstm": "gru", "gru": "elman", "elman": "lstm", "custom": "lstm"}


@cache
def _params(name, i=I):
  # Concrete even when first asked for inside a jitted probe: a cached tracer would leak.
  with jax.ensure_compile_time_eval():
    return f64(CELLS[name].init(jax.random.key(0), i))


def _xs(t=T, b=B, i=I, dtype=jnp.float64):
  return jax.random.normal(jax.random.key(1), (t, b, i)).astype(dtype)


def clear_error(call, *names, types=(TypeError, ValueError)):
  """``call()`` raises one of ``types`` from rnnjax's own code, and the message names
  the rnnjax function (or rnnjax) and each of ``names`` (the argument, the fix)."""
  with pytest.raises(types) as info:
    call()
  msg = str(info.value)
  frames = traceback.extract_tb(info.value.__traceback__)
  assert frames[-1].filename.startswith(RNNJAX_DIR), (
    f"raised from {frames[-1].filename}, not rnnjax's code: {type(info.value).__name__}: {msg}"
  )
  head = msg.split(":")[0]
  assert "rnnjax" in head or head.strip().isidentifier(), msg
  for name in names:
    assert name in msg, f"{name!r} not named in: {msg}"
  return msg


# ---------------------------------------------------------------- rj.scan, the layers, nnx


def _nnx_rnn(name):
  cell = CELLS[name]
  return rj.nnx.RNN(cell, I, params=_params(name), time_major=True)


FUNCTIONS = {
  "scan": lambda name, xs, **kw: rj.scan(CELLS[name], _params(name), xs, **kw),
  "parallel_scan": lambda name, xs, **kw: rj.parallel_scan(
    CELLS[name], _params(name), xs, max_iters=T + 1, **kw
  ),
  "stacked": lambda name, xs, carry=None, **kw: rj.stacked(
    [(CELLS[name], _params(name))], xs, None if carry is None else [carry], **kw
  ),
  "bidirectional": lambda name, xs, carry=None, **kw: rj.bidirectional(
    (CELLS[name], _params(name)),
    (CELLS[name], _params(name)),
    xs,
    None if carry is None else (carry, carry),
    **kw,
  ),
  "nnx.RNN": lambda name, xs, carry=None, lengths=None, **kw: _nnx_rnn(name)(
    xs, initial_carry=carry, seq_lengths=lengths, **kw
  ),
}

BAD_CLASSES = [
  "rank 2",
  "rank 4",
  "feature size",
  "int dtype",
  "bool dtype",
  "carry shape",
  "lengths shape",
  "lengths float",
  "lengths above T (eager)",
  "lengths negative (eager)",
  "resets shape",
  "resets dtype",
  "params of another cell",
]


def _bad_call(fn, name, bad, t, b):
  """The call for one bad-input class and the words its error must name."""
  f = FUNCTIONS[fn]
  xs = _xs(t, b)
  cell = CELLS[name]
  carry = cell.initial_carry((b,), jnp.float64)
  if bad == "rank 2" and fn == "nnx.RNN":  # flax's [T, I] is valid there; rank 1 is not
    return partial(f, name, xs[:, 0, 0]), ["inputs", "rank 1", "[T, I]"]
  if bad == "rank 2":
    return partial(f, name, xs[:, 0]), ["xs", "rank 3"]
  if bad == "rank 4":
    return partial(f, name, xs[None]), ["xs", "rank 3"]
  if bad == "feature size":
    return partial(f, name, _xs(t, b, I + 1)), ["xs", "feature size", "input_size"]
  if bad == "int dtype":
    return partial(f, name, xs.astype(jnp.int32)), ["xs", "floating point", "astype"]
  if bad == "bool dtype":
    return partial(f, name, xs > 0), ["xs", "floating point", "astype"]
  if bad == "carry shape":
    wrong = jax.tree.map(lambda c: jnp.zeros((b + 1, *c.shape[1:])), carry)
    return partial(f, name, xs, carry=wrong), ["carry", "initial_carry"]
  if bad == "lengths shape":
    return partial(f, name, xs, lengths=jnp.zeros(b + 1, jnp.int32)), ["lengths", f"({b},)"]
  if bad == "lengths float":
    return partial(f, name, xs, lengths=jnp.ones(b)), ["lengths", "integers", "astype"]
  if bad == "lengths above T (eager)":
    lengths = jnp.full(b, t + 1)
    return partial(f, name, xs, lengths=lengths), ["lengths", f"[0, T={t}]", "clip"]
  if bad == "lengths negative (eager)":
    lengths = jnp.full(b, -1)
    return partial(f, name, xs, lengths=lengths), ["lengths", f"[0, T={t}]", "clip"]
  if bad == "resets shape":
    return partial(f, name, xs, resets=jnp.zeros((t + 1, b), bool)), ["resets", f"{(t, b)}"]
  if bad == "resets dtype":
    return partial(f, name, xs, resets=jnp.zeros((t, b), jnp.int32)), ["resets", "bool"]
  assert bad == "params of another cell"
  other = _params(OTHER[name])
  if fn == "scan":
    return partial(rj.scan, cell, other, xs), ["params", "cell.init"]
  if fn == "parallel_scan":
    return partial(rj.parallel_scan, cell, other, xs), ["params", "cell.init"]
  if fn == "stacked":
    return partial(rj.stacked, [(cell, other)], xs), ["params", "cell.init"]
  return partial(rj.bidirectional, (cell, _params(name)), (cell, other), xs), ["params"]


def _applies(fn, bad):
  if fn == "nnx.RNN" and bad in ("rank 4", "int dtype"):
    return False  # flax's conventions: [*batch, T, I] with any batch axes; ints promoted
  if fn in ("parallel_scan", "nnx.RNN", "stacked", "bidirectional") and bad.startswith("resets"):
    return fn in ("stacked", "bidirectional")  # they pass resets on to rj.scan
  return not (fn == "nnx.RNN" and bad == "params of another cell")


@probe
@given(
  fn=st.sampled_from(sorted(FUNCTIONS)),
  name=st.sampled_from(sorted(CELLS)),
  bad=st.sampled_from(BAD_CLASSES),
  t=st.integers(1, 5),
  b=st.integers(1, 4),
)
def test_bad_inputs_are_clear_errors(fn, name, bad, t, b):
  """Wrong rank, shape, dtype, carry, lengths and resets, params of another cell:
  each a TypeError or ValueError from rnnjax naming the argument, eagerly."""
  if not _applies(fn, bad):
    return
  call, names = _bad_call(fn, name, bad, t, b)
  clear_error(call, *names)


@probe
@given(
  fn=st.sampled_from(["scan", "parallel_scan", "stacked", "bidirectional"]),
  bad=st.sampled_from([c for c in BAD_CLASSES if "eager" not in c]),
)
def test_bad_inputs_fail_at_trace_time(fn, bad):
  """The same errors under jax.jit (with every array traced) and under jax.eval_shape:
  they come from the shapes and dtypes, before any compute."""
  if not _applies(fn, bad):
    return
  call, names = _bad_call(fn, "lstm", bad, T, B)
  if call.func is FUNCTIONS[fn]:  # (name, xs), keyword arrays

    def traced(xs, kw):
      return call.func(call.args[0], xs, **kw)

    args = (call.args[1], call.keywords)
  else:  # (cell, params, xs) or the layers' tuples: trace the xs
    *head, xs = call.args

    def traced(xs):
      return call.func(*head, xs)

    args = (xs,)
  clear_error(lambda: jax.eval_shape(traced, *args), *names)
  clear_error(lambda: jax.jit(traced)(*args), *names)


# ---------------------------------------------------------------- lengths under jit: clipped


@cache
def _jitted(fn, name, reverse):
  if fn == "flip":
    return jax.jit(lambda xs, L: rj.flip(xs, L))
  if fn == "nnx.RNN":
    from flax import nnx

    m = _nnx_rnn(name)
    m.reverse = reverse
    return lambda xs, L: nnx.jit(lambda m, xs, L: m(xs, seq_lengths=L))(m, xs, L)
  if fn == "parallel_scan":
    return jax.jit(lambda xs, L: FUNCTIONS[fn](name, xs, lengths=L, reverse=reverse)[:2])
  if fn in ("scan", "stacked"):
    return jax.jit(lambda xs, L: FUNCTIONS[fn](name, xs, lengths=L, reverse=reverse))
  return jax.jit(lambda xs, L: FUNCTIONS[fn](name, xs, lengths=L))


@probe
@given(
  fn=st.sampled_from(["scan", "parallel_scan", "bidirectional", "flip", "nnx.RNN"]),
  reverse=st.booleans(),
  lengths=st.lists(st.integers(-3, T + 3), min_size=B, max_size=B),
)
def test_traced_lengths_are_clipped(fn, reverse, lengths):
  """Under jit, lengths outside [0, T] act as clipped to [0, T], in both directions
  and in every function (reverse and parallel_scan gave NaN before)."""
  name = "gru"
  xs = _xs()
  raw = jnp.array(lengths)
  f = _jitted(fn, name, reverse)
  got, want = f(xs, raw), f(xs, jnp.clip(raw, 0, T))
  assert_trees_close(got, want, 0, 0)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(got))


@probe
@given(
  fn=st.sampled_from(["scan", "bidirectional", "flip", "parallel_scan"]),
  lengths=st.lists(st.integers(-3, T + 3), min_size=B, max_size=B),
)
def test_checkify_reports_out_of_range_traced_lengths(fn, lengths):
  """The checked mode: checkify(..., errors=user_checks) errs exactly when a traced
  length lies outside [0, T], naming the call; in range, no error."""
  from jax.experimental import checkify

  f = checkify.checkify(_jitted(fn, "gru", False), errors=checkify.user_checks)
  err, _ = f(_xs(), jnp.array(lengths))
  bad = min(lengths) < 0 or max(lengths) > T
  msg = err.get()
  if bad:
    assert msg is not None and f"lengths must lie in [0, T={T}]" in msg and "rnnjax." in msg
  else:
    assert msg is None


# ---------------------------------------------------------------- NaN / Inf


@cache
def _padded_grad(fn, name, mode):
  cell = CELLS[name]

  def loss(p, xs, L):
    if fn == "scan":
      carry, ys = rj.scan(cell, p, xs, lengths=L, backward=mode, reverse=mode == "autodiff")
    elif fn == "stacked":
      carry, ys = rj.stacked([(cell, p)], xs, lengths=L, backward=mode)
    elif fn == "bidirectional":
      carry, ys = rj.bidirectional((cell, p), (cell, p), xs, lengths=L, backward=mode)
    else:
      carry, ys, _ = rj.parallel_scan(cell, p, xs, lengths=L, reverse=True)
    return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(c**2) for c in jax.tree.leaves(carry))

  return jax.jit(jax.value_and_grad(loss, (0, 1)))


@heavy
@given(
  fn=st.sampled_from(["scan", "stacked", "bidirectional", "parallel_scan"]),
  name=st.sampled_from(["lstm", "custom"]),
  mode=st.sampled_from(["bptt", "autodiff", "checkpoint"]),
  lengths=st.lists(st.integers(0, T), min_size=B, max_size=B),
  junk=st.sampled_from([np.nan, np.inf, -np.inf, 1e300]),
)
def test_nan_and_inf_in_padding_never_reach_values_or_gradients(fn, name, mode, lengths, junk):
  """Padding of NaN, ±Inf or 1e300 gives the loss and the gradients (every params
  leaf, and xs on valid positions) of zero padding, exactly; xs' gradient is zero
  on the padding."""
  L = jnp.array(lengths)
  xs = _xs()
  pad = (jnp.arange(T)[:, None] >= L[None, :])[..., None]
  f = _padded_grad(fn, name, "bptt" if fn == "parallel_scan" else mode)
  (v_bad, (gp_bad, gx_bad)) = f(_params(name), jnp.where(pad, junk, xs), L)
  (v_zero, (gp_zero, gx_zero)) = f(_params(name), jnp.where(pad, 0.0, xs), L)
  assert bool(jnp.isfinite(v_bad)) and float(v_bad) == float(v_zero)
  assert_trees_close(gp_bad, gp_zero, 0, 0)
  assert_trees_close(gx_bad, gx_zero, 0, 0)
  assert bool(jnp.all(jnp.where(pad, gx_bad, 0.0) == 0.0))


@cache
def _forward(fn, name):
  return jax.jit(lambda xs: FUNCTIONS[fn](name, xs)[1])


@heavy
@given(
  fn=st.sampled_from(["scan", "bidirectional", "stacked", "parallel_scan"]),
  name=st.sampled_from(sorted(CELLS)),
  t0=st.integers(0, T - 1),
  b0=st.integers(0, B - 1),
  junk=st.sampled_from([np.nan, np.inf]),
)
def test_nan_in_a_valid_position_stays_in_its_sequence(fn, name, t0, b0, junk):
  """The documented value: a NaN or Inf in a valid input propagates (it is data),
  but only within its own sequence; the other sequences of the batch are
  unchanged. (Forward: from step t0 on; bidirectional: the whole sequence.)
  parallel_scan, whose Newton iteration couples the batch, meets the NaN and
  falls back to rj.scan (``fallback="sequential"``, its default), as documented."""
  xs = _xs()
  f = _forward(fn, name)
  clean, dirty = f(xs), f(xs.at[t0, b0, 0].set(junk))
  others = [b for b in range(B) if b != b0]
  # parallel_scan meets the NaN and falls back to rj.scan (documented): equal to its tol
  tol = 1e-8 if fn == "parallel_scan" else 0
  assert_trees_close(dirty[:, others], clean[:, others], 0, tol)
  if fn != "bidirectional":  # the steps before t0 never saw it
    assert_trees_close(dirty[:t0, b0], clean[:t0, b0], 0, tol)
  if np.isnan(junk):  # a NaN is data: it propagates (an Inf may saturate to a value)
    assert not bool(jnp.all(jnp.isfinite(dirty[t0, b0] if fn != "bidirectional" else dirty)))


# ---------------------------------------------------------------- empty axes and float16


@probe
@given(
  fn=st.sampled_from(sorted(FUNCTIONS)),
  name=st.sampled_from(sorted(CELLS)),
  shape=st.sampled_from([(0, 2), (3, 0), (0, 0)]),
  with_lengths=st.booleans(),
)
def test_empty_axes_give_empty_outputs_and_the_initial_carry(fn, name, shape, with_lengths):
  t, b = shape
  xs = _xs(t, b)
  carry = jax.tree.map(lambda c: c + 0.5, CELLS[name].initial_carry((b,), jnp.float64))
  kw = {"lengths": jnp.zeros(b, jnp.int32)} if with_lengths else {}
  if fn == "nnx.RNN":
    carry_out, ys = FUNCTIONS[fn](name, xs, carry=carry, return_carry=True, **kw)
    if isinstance(carry, rj.LSTMCarry):  # the module answers in flax's layout, (c, h)
      carry = (carry.c, carry.h)
  elif fn in ("stacked", "bidirectional"):
    carry_out, ys = FUNCTIONS[fn](name, xs, carry=carry, **kw)
    carry_out = carry_out[0]
  else:
    carry_out, ys = FUNCTIONS[fn](name, xs, carry=carry, **kw)[:2]
  assert ys.shape[:2] == (t, b)
  assert_trees_close(carry_out, carry, 0, 0)


@probe
@given(fn=st.sampled_from(["scan", "parallel_scan", "stacked"]), name=st.sampled_from(["lstm"]))
def test_float16_inputs_run_in_the_params_dtype(fn, name):
  """float16 inputs are floating point, so accepted: the compute dtype is the
  result type of the inputs and the (here float64) params; the values are those
  of the inputs cast up."""
  xs = _xs(dtype=jnp.float16)
  got = _forward(fn, name)(xs)
  want = _forward(fn, name)(xs.astype(jnp.float64))
  assert got.dtype == want.dtype == jnp.float64
  assert_trees_close(got, want, 0, 0)


# ---------------------------------------------------------------- custom_cell, check_cell


@probe
@given(
  bad=st.sampled_from(
    [
      "init not callable",
      "step not callable",
      "initial_carry not callable",
      "output_size 0",
      "project without update",
      "non-floating carry",
      "check_cell: not a cell",
      "check_cell: input_size 0",
      "check_cell: batch_size 1",
      "check_cell: length 1",
      "check_cell: key an int",
    ]
  )
)
def test_custom_cell_and_check_cell_bad_arguments(bad):
  c = _custom()
  init, step = c.init, c.step

  def ic(s=(), d=jnp.float32):
    return jnp.zeros((*s, 3), d)

  calls = {
    "init not callable": (lambda: rj.custom_cell(1, step, ic), ["init", "callable"]),
    "step not callable": (lambda: rj.custom_cell(init, None, ic), ["step", "callable"]),
    "initial_carry not callable": (
      lambda: rj.custom_cell(init, step, "zeros"),
      ["initial_carry", "callable"],
    ),
    "output_size 0": (lambda: rj.custom_cell(init, step, ic, output_size=0), ["output_size"]),
    "project without update": (
      lambda: rj.custom_cell(init, step, ic, project=lambda p, x: x),
      ["project", "update"],
    ),
    "non-floating carry": (
      lambda: rj.custom_cell(init, step, lambda s=(), d=None: jnp.zeros((*s, 3), jnp.int32)),
      ["initial_carry", "float"],
    ),
    "check_cell: not a cell": (lambda: rj.check_cell(step, I), ["cell"]),
    "check_cell: input_size 0": (lambda: rj.check_cell(c, 0), ["input_size"]),
    "check_cell: batch_size 1": (lambda: rj.check_cell(c, I, batch_size=1), ["batch_size"]),
    "check_cell: length 1": (lambda: rj.check_cell(c, I, length=1), ["length"]),
    "check_cell: key an int": (lambda: rj.check_cell(c, I, key=0), ["key", "jax.random.key"]),
  }
  call, names = calls[bad]
  clear_error(call, *names)


# ---------------------------------------------------------------- the Jacobian tools

TOOLS = {
  "trajectory": jac.trajectory,
  "step_jacobians": jac.step_jacobians,
  "lyapunov_spectrum": jac.lyapunov_spectrum,
  "gradient_norms_vs_lag": jac.gradient_norms_vs_lag,
  "lecture_bound": jac.lecture_bound,
  "diagnose": jac.diagnose,
}


@probe
@given(
  tool=st.sampled_from(sorted(TOOLS)),
  name=st.sampled_from(["elman", "custom"]),
  bad=st.sampled_from(
    [
      "rank 3",
      "rank 1",
      "int dtype",
      "bool dtype",
      "feature size",
      "batched carry",
      "T = 0",
      "params of another cell",
    ]
  ),
)
def test_jacobian_tools_bad_inputs(tool, name, bad):
  cell, p = CELLS[name], _params(name)
  xs = _xs()[:, 0]  # [T, I]
  f = TOOLS[tool]
  carry = None
  if bad == "rank 3":
    xs, names = _xs(), ["xs", "one sequence [T, I]", "vmap"]
  elif bad == "rank 1":
    xs, names = xs[:, 0], ["xs", "one sequence [T, I]"]
  elif bad == "int dtype":
    xs, names = xs.astype(jnp.int32), ["xs", "floating point"]
  elif bad == "bool dtype":
    xs, names = xs > 0, ["xs", "floating point"]
  elif bad == "feature size":
    xs, names = _xs(i=I + 1)[:, 0], ["input_size"]
  elif bad == "batched carry":
    carry = jax.tree.map(lambda c: c[None], cell.initial_carry((), jnp.float64))
    names = ["carry"]
  elif bad == "T = 0":
    xs, names = xs[:0], ["xs", "T=0"]
  else:
    p, names = _params(OTHER[name]), ["params"]
  if tool == "lecture_bound" and name == "custom":
    names = ["activation"]  # refused first: it declares no activation
  clear_error(lambda: f(cell, p, xs, carry), *names)


# ---------------------------------------------------------------- interop (no torch needed)


@probe
@given(
  bad=st.sampled_from(
    [
      "to_torch: custom cell",
      "to_torch: gru reset before",
      "to_torch: not a layer",
      "from_torch: unknown kind",
      "from_torch: missing key",
      "from_torch: wrong shape",
    ]
  )
)
def test_interop_bad_inputs(bad):
  gru_after = rj.gru(3, reset="after")
  state = interop.to_torch((gru_after, gru_after.init(jax.random.key(0), I)))
  calls = {
    "to_torch: custom cell": (lambda: interop.to_torch((CELLS["custom"], _params("custom"))), []),
    "to_torch: gru reset before": (lambda: interop.to_torch((CELLS["gru"], _params("gru"))), []),
    "to_torch: not a layer": (lambda: interop.to_torch(np.zeros(3)), []),
    "from_torch: unknown kind": (lambda: interop.from_torch("lstmm", state), ["kind"]),
    "from_torch: missing key": (
      lambda: interop.from_torch("gru", {k: v for k, v in state.items() if "weight_hh" not in k}),
      ["weight_hh_l0"],
    ),
    "from_torch: wrong shape": (
      lambda: interop.from_torch("gru", {**state, "weight_hh_l0": np.zeros((9, 2))}),
      ["weight_hh_l0"],
    ),
  }
  call, names = calls[bad]
  clear_error(call, *names)

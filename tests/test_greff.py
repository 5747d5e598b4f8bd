"""The LSTM variants of Greff et al. 2017 (rnnjax/_src/cells/greff.py), held to a
Python loop of the paper's equations written here from the paper (values and
gradients, float64), to the paper's identities between variants, and to check_cell."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, B, I, H = 5, 3, 2, 3
TOL = {"rtol": 1e-11, "atol": 1e-12}

# The layout the docstring promises, restated: gate blocks of w_x/w_h/b and peepholes of w_c.
LAYOUT = {
  "V": ("ifgo", "ifo"),
  "NIG": ("fgo", "fo"),
  "NFG": ("igo", "io"),
  "NOG": ("ifg", "if"),
  "NIAF": ("ifgo", "ifo"),
  "NOAF": ("ifgo", "ifo"),
  "NP": ("ifgo", ""),
  "CIFG": ("fgo", "fo"),
  "FGR": ("ifgo", "ifo"),
}


def sig(z):
  return 1.0 / (1.0 + jnp.exp(-z))


def reference(variant, p, xs, h, c, a=None):
  """The paper's equations, one step at a time, for ``variant``: ``(h_T, c_T, ys)``."""
  blocks, peeps = LAYOUT[variant]
  W = {k: (p.w_x[:, n * H : (n + 1) * H], p.w_h[:, n * H : (n + 1) * H], p.b[n * H : (n + 1) * H])
       for n, k in enumerate(blocks)}  # fmt: skip
  P = {k: p.w_c[None, n * H : (n + 1) * H] for n, k in enumerate(peeps)}
  ys = []
  for t in range(xs.shape[0]):
    x = xs[t]

    def pre(k, x=x, h=h, a=a):
      wx, wh, b = W[k]
      z = x @ wx + h @ wh + b[None]
      if (
        variant == "FGR" and k != "g"
      ):  # R_{g'g} a_{t-1}: rows (i, f, o) of t-1, columns (i, f, o) of t
        col = "ifo".index(k)
        z = z + a @ p.w_r[:, col * H : (col + 1) * H]
      return z

    f = sig(pre("f") + P.get("f", 0.0) * c) if variant != "NFG" else 1.0
    if variant == "CIFG":
      i = 1.0 - f
    elif variant == "NIG":
      i = 1.0
    else:
      i = sig(pre("i") + P.get("i", 0.0) * c)
    g = pre("g") if variant == "NIAF" else jnp.tanh(pre("g"))
    c = f * c + i * g
    o = sig(pre("o") + P.get("o", 0.0) * c) if variant != "NOG" else 1.0
    h = o * (c if variant == "NOAF" else jnp.tanh(c))
    if variant == "FGR":
      a = jnp.concatenate([i, f, o], axis=-1)
    ys.append(h)
  return h, c, jnp.stack(ys)


def setup(variant, seed=0):
  """Random float64 params (peepholes, w_r and biases non-zero), inputs and carry."""
  rng = np.random.default_rng(seed)
  cell = rj.greff_lstm(H, variant)
  shapes = jax.eval_shape(lambda k: cell.init(k, I), jax.random.key(0))
  params = jax.tree.map(lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)), shapes)
  xs = jnp.asarray(rng.standard_normal((T, B, I)))
  carry = jax.tree.map(
    lambda s: jnp.asarray(0.5 * rng.standard_normal(s.shape)),
    jax.eval_shape(lambda: cell.initial_carry((B,), jnp.float64)),
  )
  return cell, params, xs, carry


@pytest.mark.parametrize("variant", rj.GREFF_VARIANTS)
def test_variant_equals_the_papers_equations_values_and_gradients(variant):
  with jax.enable_x64(True):
    cell, params, xs, carry = setup(variant)
    extra = (carry.a,) if variant == "FGR" else ()
    got_carry, got_ys = rj.scan(cell, params, xs, carry)
    h, c, ys = reference(variant, params, xs, carry.h, carry.c, *extra)
    np.testing.assert_allclose(got_ys, ys, **TOL)
    np.testing.assert_allclose(got_carry.h, h, **TOL)
    np.testing.assert_allclose(got_carry.c, c, **TOL)
    w = jnp.asarray(np.random.default_rng(1).standard_normal((T, B, H)))

    def loss_scan(p, xs, backward):
      carry_T, ys = rj.scan(cell, p, xs, carry, backward=backward)
      return jnp.sum(w * ys) + jnp.sum(carry_T.c**2)

    def loss_ref(p, xs):
      _, c, ys = reference(variant, p, xs, carry.h, carry.c, *extra)
      return jnp.sum(w * ys) + jnp.sum(c**2)

    want = jax.grad(loss_ref, argnums=(0, 1))(params, xs)
    got = jax.grad(loss_scan, argnums=(0, 1))(params, xs, "bptt")  # the hinted backward
    for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
      np.testing.assert_allclose(g, e, **TOL)


def test_layout_and_init():
  """Block counts, peepholes and w_r per variant; the forget bias lands on f; V starts
  as peephole_lstm with the same key."""
  for variant, (blocks, peeps) in LAYOUT.items():
    assert rj.greff_blocks(variant) == (tuple(blocks), tuple(peeps))
    p = rj.greff_lstm(H, variant).init(jax.random.key(0), I)
    assert p.w_x.shape == (I, len(blocks) * H) and p.w_h.shape == (H, len(blocks) * H)
    assert (p.w_c is None) == (peeps == "")
    assert (p.w_r is None) == (variant != "FGR")
    b = np.asarray(p.b).reshape(len(blocks), H)
    for n, k in enumerate(blocks):
      np.testing.assert_array_equal(b[n], 1.0 if k == "f" else 0.0)
  v = rj.greff_lstm(H).init(jax.random.key(3), I)
  pe = rj.peephole_lstm(H).init(jax.random.key(3), I)
  for name in ("w_x", "w_h", "b", "w_c"):
    np.testing.assert_array_equal(getattr(v, name), getattr(pe, name))


def _saturated(params, block, value=800.0):
  """Params whose gate ``block`` (an index into w_x's blocks) is a constant σ(value)."""
  sl = slice(block * H, (block + 1) * H)
  return params._replace(
    w_x=params.w_x.at[:, sl].set(0.0),
    w_h=params.w_h.at[:, sl].set(0.0),
    b=params.b.at[sl].set(value),
  )


def test_the_papers_identities():
  """NP is rnnjax.lstm; V is rnnjax.peephole_lstm; CIFG without peepholes is
  rnnjax.cifg_lstm (i = 1 − f); FGR with w_r = 0 is V; NIG, NFG, NOG are V with that
  gate saturated open (σ(800) = 1 in float64); NOG's output is tanh(c_t)."""
  with jax.enable_x64(True):
    _, p, xs, carry = setup("NP")
    np_out = rj.scan(rj.greff_lstm(H, "NP"), p, xs, carry)
    lstm_out = rj.scan(rj.lstm(H), rj.LSTMParams(p.w_x, p.w_h, p.b), xs, carry)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), np_out, lstm_out)

    _, v, xs, carry = setup("V")
    v_out = rj.scan(rj.greff_lstm(H), v, xs, carry)
    pe = rj.PeepholeLSTMParams(v.w_x, v.w_h, v.b, v.w_c)
    pe_out = rj.scan(rj.peephole_lstm(H), pe, xs, carry)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), v_out, pe_out)

    _, fgr, _, fcarry = setup("FGR")
    fgr = fgr._replace(w_x=v.w_x, w_h=v.w_h, b=v.b, w_c=v.w_c, w_r=jnp.zeros_like(fgr.w_r))
    _, fgr_ys = rj.scan(rj.greff_lstm(H, "FGR"), fgr, xs, fcarry._replace(h=carry.h, c=carry.c))
    np.testing.assert_allclose(fgr_ys, v_out[1], **TOL)

    _, cf, _, _ = setup("CIFG")
    cf0 = cf._replace(w_c=jnp.zeros_like(cf.w_c))
    cifg_out = rj.scan(rj.greff_lstm(H, "CIFG"), cf0, xs, carry)
    ref_out = rj.scan(rj.cifg_lstm(H), rj.CIFGParams(cf.w_x, cf.w_h, cf.b), xs, carry)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), cifg_out, ref_out)
    # with peepholes too: one step's c_t − c_{t-1} = (1 − f)(g − c_{t-1}), f from the f block
    new, _ = rj.greff_lstm(H, "CIFG").step(cf, carry, xs[0])
    z = xs[0] @ cf.w_x + carry.h @ cf.w_h + cf.b[None]
    f = sig(z[:, :H] + cf.w_c[None, :H] * carry.c)
    np.testing.assert_allclose(
      new.c - carry.c, (1 - f) * (jnp.tanh(z[:, H : 2 * H]) - carry.c), **TOL
    )

    for variant, gate in (("NIG", 0), ("NFG", 1), ("NOG", 3)):
      _, pv, _, _ = setup(variant)
      blocks, peeps = LAYOUT[variant]
      # the variant's params put into V's layout, with the missing gate saturated open
      full = v
      for n, k in enumerate(blocks):
        src, dst = slice(n * H, (n + 1) * H), slice("ifgo".index(k) * H, ("ifgo".index(k) + 1) * H)
        full = full._replace(
          w_x=full.w_x.at[:, dst].set(pv.w_x[:, src]),
          w_h=full.w_h.at[:, dst].set(pv.w_h[:, src]),
          b=full.b.at[dst].set(pv.b[src]),
        )
      w_c = jnp.zeros(3 * H)
      for n, k in enumerate(peeps):
        dst = slice("ifo".index(k) * H, ("ifo".index(k) + 1) * H)
        w_c = w_c.at[dst].set(pv.w_c[n * H : (n + 1) * H])
      full = _saturated(full._replace(w_c=w_c), gate)
      got = rj.scan(rj.greff_lstm(H, variant), pv, xs, carry)
      want = rj.scan(rj.greff_lstm(H), full, xs, carry)
      jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)

    _, pn, xs, carry = setup("NOG")
    cell = rj.greff_lstm(H, "NOG")
    for t in range(T):
      carry, y = cell.step(pn, carry, xs[t])
      np.testing.assert_allclose(y, jnp.tanh(carry.c), **TOL)


def test_the_variants_differ():
  """Each variant computes something else from V's params where it can read them
  (a test that cannot pass if two variants share one step)."""
  with jax.enable_x64(True):
    _, v, xs, carry = setup("V")
    ref = rj.scan(rj.greff_lstm(H), v, xs, carry)[1]
    for variant in ("NIAF", "NOAF", "NP"):
      p = v._replace(w_c=None) if variant == "NP" else v
      ys = rj.scan(rj.greff_lstm(H, variant), p, xs, carry)[1]
      assert float(jnp.max(jnp.abs(ys - ref))) > 1e-3, variant


@pytest.mark.parametrize("variant", rj.GREFF_VARIANTS)
def test_check_cell(variant):
  report = rj.check_cell(rj.greff_lstm(H, variant), I)
  assert all(c.passed for c in report.values())
  assert "backward_step" in report or "recurrent_grads" in report


def test_bad_variant_names_the_choices():
  with pytest.raises(
    ValueError, match=r"rnnjax.greff_lstm: unknown variant 'LSTM'; expected one of \['CIFG'"
  ):
    rj.greff_lstm(4, "LSTM")
  with pytest.raises(ValueError, match="hidden_size"):
    rj.greff_lstm(0, "V")


def test_hint_speed_path_is_used():
  """The BackwardRows hint is compiled: the cell has the recurrent-gradient rule, and
  scan(backward='bptt') runs it (equal to autodiff, checked above)."""
  cell = rj.greff_lstm(H, "FGR")
  assert cell.compiled.recurrent_grads is not None
  assert repr(cell) == "rnnjax.greff_lstm(3, variant='FGR', forget_bias=1.0)"
  assert rj.greff_lstm(H, "FGR") is cell  # memoized: one compilation per configuration

"""The applications' one training home: optimizer, learning-rate setting, train step, loop."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rnnjax.apps import training


def test_train_step_is_clipped_adam_with_the_global_norm():
  params = {"w": jnp.array([3.0, -4.0])}

  def loss(p, scale):
    return scale * jnp.sum(p["w"] ** 2)  # gradient 2·scale·w, norm 10·scale

  opt = training.make_optimizer(lr=0.1, clip=1.0)
  out = training.make_train_step(loss, opt)(params, opt.init(params), 2.0)
  assert float(out.loss) == pytest.approx(50.0)
  assert float(out.grad_norm) == pytest.approx(20.0)  # before clipping
  ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
  updates, _ = ref.update(jax.grad(loss)(params, 2.0), ref.init(params), params)
  np.testing.assert_allclose(out.params["w"], params["w"] + updates["w"], rtol=1e-6)


def test_set_learning_rate_changes_the_step_and_nothing_else():
  params = {"w": jnp.ones(3)}
  opt = training.make_optimizer(lr=1e-3)
  state = training.set_learning_rate(opt.init(params), 0.5)
  assert float(optax.tree_utils.tree_get(state, "learning_rate")) == 0.5
  g = {"w": jnp.array([1.0, -1.0, 0.0])}
  updates, _ = opt.update(g, state, params)
  # Adam's first step is lr · sign(g) (for g != 0)
  np.testing.assert_allclose(updates["w"], [-0.5, 0.5, 0.0], atol=1e-6)


def test_cosine_lr_endpoints():
  assert training.cosine_lr(2.0, 0.0) == 2.0
  assert training.cosine_lr(2.0, 1.0) == pytest.approx(0.1)
  assert training.cosine_lr(2.0, 0.5) == pytest.approx(2.0 * (0.05 + 0.95 * 0.5))
  assert training.cosine_lr(2.0, 7.0) == training.cosine_lr(2.0, 1.0)  # clipped


def test_run_loop_budget_logging_and_hooks():
  calls, logged, after = [], [], []

  def step_fn(step, frac):
    calls.append((step, frac))
    return {"loss": jnp.asarray(float(step))}

  r = training.run_loop(
    step_fn,
    steps=7,
    start=2,
    log_every=2,
    progress=False,
    on_log=logged.append,
    after_step=after.append,
  )
  assert [c[0] for c in calls] == [2, 3, 4, 5, 6]
  assert [c[1] for c in calls] == pytest.approx([2 / 7, 3 / 7, 4 / 7, 5 / 7, 6 / 7])
  assert r.steps == 7 and after == [3, 4, 5, 6, 7]
  assert [row["step"] for row in logged] == [4, 6] and [row["loss"] for row in logged] == [3, 5]
  assert r.history == logged and all(math.isfinite(row["seconds"]) for row in logged)
  with pytest.raises(ValueError, match="give a step budget"):
    training.run_loop(step_fn)


def test_a_one_device_mesh_gives_the_plain_step_and_errors_name_the_fix():
  """The data-parallel step (`mesh=`) on one device is the one-device step, bit
  for bit; a device count beyond the visible ones names both and the fix.
  Several devices are tested in a subprocess (tests/test_multidevice.py)."""
  params = {"w": jnp.array([3.0, -4.0]), "b": jnp.array(0.5)}

  def loss(p, x):
    return jnp.mean((x @ p["w"] + p["b"]) ** 2)

  x = np.arange(8.0, dtype=np.float32).reshape(4, 2)
  opt = training.make_optimizer(lr=0.1)
  mesh = training.make_mesh(1)
  assert mesh.size == 1 and mesh.axis_names == (training.MESH_AXIS,)
  rep = training.replicated(mesh)
  sharded = training.make_train_step(loss, opt, mesh=mesh, batch_axes=(0,))(
    training.put(params, rep),
    training.put(opt.init(params), rep),
    training.put(x, training.batch_sharded(mesh, 0)),
  )
  plain = training.make_train_step(loss, opt)(params, opt.init(params), x)
  chex.assert_trees_all_equal(sharded.params, plain.params)
  assert float(sharded.loss) == float(plain.loss) and sharded.params["w"].sharding == rep
  training.check_batch(5, mesh)  # any batch divides among one device
  n, backend = jax.device_count(), jax.default_backend()
  visible = f"1 {backend} device is" if n == 1 else f"{n} {backend} devices are"
  with pytest.raises(
    ValueError, match=rf"^devices={n + 2} but {visible} visible; use --devices between 1 and {n} "
  ):
    training.make_mesh(n + 2)

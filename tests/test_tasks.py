"""Synthetic tasks: the generators match their definitions and the baselines
are the analytic values (checked by Monte Carlo)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import tasks
from rnnjax.apps import experiment


def test_adding_problem_definition_and_baseline():
  b = tasks.adding(jax.random.key(0), 20_000, 50)
  values, marker = np.asarray(b.xs[..., 0]), np.asarray(b.xs[..., 1])
  assert b.xs.shape == (50, 20_000, 2)
  assert np.all(marker[:25].sum(0) == 1) and np.all(marker[25:].sum(0) == 1)
  np.testing.assert_allclose(b.targets, (values * marker).sum(0), rtol=1e-6)
  mse_predict_one = float(np.mean((np.asarray(b.targets) - 1.0) ** 2))
  assert mse_predict_one == pytest.approx(tasks.adding_baseline(50), rel=0.03)
  assert tasks.ADDING_BASELINE == 1 / 6


def test_copy_memory_definition_and_baseline():
  T = 30
  b = tasks.copy_memory(jax.random.key(0), 512, T)
  ids = np.asarray(jnp.argmax(b.xs, -1))
  assert b.xs.shape == (T + 20, 512, tasks.COPY_CLASSES)
  assert np.all((ids[:10] >= 1) & (ids[:10] <= 8))
  assert np.all(ids[10 : T + 9] == tasks.BLANK) and np.all(ids[T + 9] == tasks.DELIMITER)
  np.testing.assert_array_equal(b.targets[-10:], ids[:10])
  assert np.all(np.asarray(b.targets[: T + 10]) == 0)
  # the memoryless strategy: blanks, then uniform over the 8 symbols
  p = np.zeros((T + 20, tasks.COPY_CLASSES))
  p[: T + 10, 0] = 1.0
  p[T + 10 :, 1:9] = 1 / 8
  ce = -np.mean(
    np.log(
      np.take_along_axis(p[:, None, :].repeat(512, 1), np.asarray(b.targets)[..., None], -1)
      + 1e-300
    )
  )
  assert ce == pytest.approx(tasks.copy_baseline(T), rel=1e-9)
  assert tasks.copy_baseline(T) == pytest.approx(10 * math.log(8) / (T + 20))


def test_reverse_digits():
  b = tasks.reverse_digits(jax.random.key(1), 64, 6, 2)
  for j in range(64):
    L = int(b.src_len[j])
    src = list(np.asarray(b.src[:L, j]))
    assert list(np.asarray(b.tgt[:L, j])) == src[::-1]
    assert int(b.tgt[L, j]) == 2 and np.all(np.asarray(b.tgt[L + 1 :, j]) == 0)
    assert np.all(np.asarray(b.src[L:, j]) == 0) and 2 <= L <= 6
  with pytest.raises(ValueError, match=r"need 1 <= min_len <= max_len, got 5, 3"):
    tasks.reverse_digits(jax.random.key(1), 4, 3, 5)


def test_task_errors():
  with pytest.raises(ValueError, match=r"adding: T must be an int >= 2, got 1"):
    tasks.adding(jax.random.key(0), 2, 1)
  with pytest.raises(
    ValueError, match=r"unknown task 'sort'; expected one of \['adding', 'copy'\]"
  ):
    experiment.task_spec("sort", 10)
  with pytest.raises(ValueError, match=r"unknown cell 'rnn'"):
    rj.make_cell("rnn", 8)


def test_lstm_beats_the_adding_baseline_quickly():
  r = experiment.run_experiment(
    "adding",
    "lstm",
    10,
    hidden=32,
    steps=400,
    minutes=None,
    lr=1e-2,
    progress=False,
    test_batch=500,
  )
  assert r["final_test_loss"] < 0.25 * r["baseline"]
  assert len(r["loss_curve"]) > 5 and all("grad_norm" in c for c in r["loss_curve"])

"""Synthetic tasks: the generators match their definitions and the baselines
are the analytic values (checked by Monte Carlo)."""

import math

import chex
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
  chex.assert_shape(b.xs, (50, 20_000, 2))
  assert np.all(marker[:25].sum(0) == 1) and np.all(marker[25:].sum(0) == 1)
  np.testing.assert_allclose(b.targets, (values * marker).sum(0), rtol=1e-6)
  mse_predict_one = float(np.mean((np.asarray(b.targets) - 1.0) ** 2))
  assert mse_predict_one == pytest.approx(tasks.adding_baseline(50), rel=0.03)
  assert tasks.ADDING_BASELINE == 1 / 6


def test_copy_memory_definition_and_baseline():
  T = 30
  b = tasks.copy_memory(jax.random.key(0), 512, T)
  ids = np.asarray(jnp.argmax(b.xs, -1))
  chex.assert_shape([b.xs, b.targets], [(T + 20, 512, tasks.COPY_CLASSES), (T + 20, 512)])
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


def _check_reversal(b, min_len, max_len):
  src, tgt, lengths = np.asarray(b.src), np.asarray(b.tgt), np.asarray(b.src_len)
  np.testing.assert_array_equal(b.tgt_len, lengths + 1)
  for j in range(src.shape[1]):
    L = int(lengths[j])
    assert min_len <= L <= max_len
    assert np.all((src[:L, j] >= tasks.DIGIT0) & (src[:L, j] < tasks.REVERSE_VOCAB))
    np.testing.assert_array_equal(tgt[:L, j], src[:L, j][::-1])
    assert tgt[L, j] == 2 and np.all(tgt[L + 1 :, j] == 0) and np.all(src[L:, j] == 0)


def _digit_sums(b):
  """Σ digits of each string, computed here from the tokens (not by tasks.held_out)."""
  src, lengths = np.asarray(b.src), np.asarray(b.src_len)
  valid = np.arange(src.shape[0])[:, None] < lengths[None]
  return np.where(valid, src - tasks.DIGIT0, 0).sum(0)


def test_reverse_digits():
  b = tasks.reverse_digits(jax.random.key(1), 64, 6, 2)
  _check_reversal(b, 2, 6)
  with pytest.raises(ValueError, match=r"need 1 <= min_len <= max_len, got 5, 3"):
    tasks.reverse_digits(jax.random.key(1), 4, 3, 5)


def test_held_out_is_the_digit_sum_rule_within_each_length():
  d = tasks.DIGIT0
  # columns: "19" (sum 10), "0", "5", "55" then a padding digit 5 that must not count
  src = jnp.array([[d + 1, d + 0, d + 5, d + 5], [d + 9, 0, 0, d + 5], [0, 0, 0, d + 5]])
  held = tasks.held_out(src, jnp.array([2, 1, 1, 2]))
  np.testing.assert_array_equal(held, [True, True, False, True])


def test_reverse_digits_only_held_out():
  max_len = 5
  b = tasks.reverse_digits(jax.random.key(2), 400, max_len, only_held_out=True)
  _check_reversal(b, 1, max_len)
  assert np.all(_digit_sums(b) % 10 == 0)
  assert bool(jnp.all(tasks.held_out(b.src, b.src_len)))
  assert set(np.asarray(b.src_len).tolist()) == set(range(1, max_len + 1))  # every length
  # the only held-out string of length 1 is "0"; longer ones take every digit,
  # the last (the one set to close the sum) included
  src, lengths = np.asarray(b.src), np.asarray(b.src_len)
  assert np.all(src[0, lengths == 1] == tasks.DIGIT0)
  for t in (0, max_len - 1):
    assert len(np.unique(src[t, lengths == max_len])) == 10


def test_plain_batch_holds_out_one_string_in_ten_at_every_length():
  b = tasks.reverse_digits(jax.random.key(3), 20_000, 4, 2)
  held = np.asarray(tasks.held_out(b.src, b.src_len))
  np.testing.assert_array_equal(held, _digit_sums(b) % 10 == 0)
  lengths = np.asarray(b.src_len)
  for L in (2, 3, 4):
    assert np.mean(held[lengths == L]) == pytest.approx(0.1, abs=0.02)  # ~4σ at ~6700 draws


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

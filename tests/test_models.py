"""The lecture's other RNN shapes: many-to-one with lengths, a bidirectional
tagger, and an encoder-decoder with teacher forcing and greedy decoding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import tasks
from rnnjax.apps import experiment, training
from rnnjax.apps.models.heads import classifier, tagger
from rnnjax.apps.models.seq2seq import seq2seq


def _fit(model, batch_fn, steps, lr=1e-2, seed=0):
  """Train with the applications' one optimizer and train-step builder."""
  params = model.init(jax.random.key(seed))
  opt = training.make_optimizer(lr, clip=1.0)
  state = opt.init(params)
  step = training.make_train_step(lambda p, k: model.loss(p, *batch_fn(k)), opt)
  for i in range(steps):
    out = step(params, state, jax.random.key(1000 + i))
    params, state = out.params, out.opt_state
  return params


def _majority_batch(k, B=64, T=12, V=4):
  """Variable-length sequences over 1..V-1 (0 = pad); label: the most frequent symbol."""
  kl, kx = jax.random.split(k)
  lengths = jax.random.randint(kl, (B,), 3, T + 1)
  ids = jax.random.randint(kx, (T, B), 1, V)
  ids = jnp.where(jnp.arange(T)[:, None] < lengths[None], ids, 0)
  counts = jnp.stack([jnp.sum(ids == v, 0) for v in range(1, V)], -1)
  return ids, lengths, jnp.argmax(counts, -1)


def test_classifier_learns_with_lengths_and_ignores_padding():
  model = classifier(rj.gru(32), 4, 3, embed=8)
  params = _fit(model, _majority_batch, 300)
  ids, lengths, labels = _majority_batch(jax.random.key(7), B=500)
  acc = float(jnp.mean(model.predict(params, ids, lengths) == labels))
  assert acc > 0.85
  garbage = jnp.where(jnp.arange(12)[:, None] < lengths[None], ids, 3)  # padding changed
  np.testing.assert_allclose(
    model.apply(params, garbage, lengths), model.apply(params, ids, lengths), rtol=1e-6
  )


def _next_token_batch(k, B=64, T=10, V=6):
  """Tag each position with the *next* token (0 at the end): needs the future."""
  kl, kx = jax.random.split(k)
  lengths = jax.random.randint(kl, (B,), 2, T + 1)
  ids = jax.random.randint(kx, (T, B), 1, V)
  valid = jnp.arange(T)[:, None] < lengths[None]
  ids = jnp.where(valid, ids, 0)
  tags = jnp.concatenate([ids[1:], jnp.zeros((1, B), ids.dtype)])
  tags = jnp.where(jnp.arange(T)[:, None] < (lengths - 1)[None], tags, 0)
  return ids, lengths, tags


def test_bidirectional_tagger_uses_the_future():
  model = tagger(rj.lstm(24), rj.lstm(24), 6, 6, embed=8)
  params = _fit(model, _next_token_batch, 300)
  ids, lengths, tags = _next_token_batch(jax.random.key(9), B=300)
  pred = model.predict(params, ids, lengths)
  mask = jnp.arange(10)[:, None] < lengths[None]
  acc = float(jnp.sum((pred == tags) & mask) / jnp.sum(mask))
  assert acc > 0.95


def test_seq2seq_generalises_to_held_out_strings_of_every_length():
  """Trained without the strings whose digit sum is a multiple of 10, the
  encoder-decoder reverses those strings, at every length."""
  r = experiment.run_seq2seq(
    "gru", 3, hidden=64, steps=600, progress=False, test_size=300, log_every=100
  )
  assert r["split"] == "held out: digit sum % 10 == 0"
  assert r["exact_match"] >= 0.95
  assert sorted(r["exact_match_by_length"]) == [1, 2, 3]
  assert min(r["exact_match_by_length"].values()) >= 0.9
  with pytest.raises(ValueError, match=r"both cells must be of one kind and size"):
    seq2seq(rj.gru(8), rj.lstm(8), 13)


def test_exact_match_counts_up_to_eos():
  b = tasks.reverse_digits(jax.random.key(0), 3, 3)
  toks = jnp.concatenate([b.tgt, jnp.full((2, 3), 7)])  # junk after EOS is fine
  assert bool(jnp.all(experiment.exact_match(toks, b)))
  wrong = toks.at[0, 1].set(12 if int(toks[0, 1]) != 12 else 11)
  np.testing.assert_array_equal(experiment.exact_match(wrong, b), [True, False, True])


def test_held_out_strings_carry_no_loss_in_training():
  b = experiment.reverse_training_batch(jax.random.key(3), 200, 4)
  held = np.asarray(tasks.held_out(b.src, b.src_len))
  assert 5 <= held.sum() <= 50
  np.testing.assert_array_equal(np.asarray(b.tgt_len) == 0, held)
  np.testing.assert_array_equal(np.asarray(b.tgt_len)[~held], np.asarray(b.src_len)[~held] + 1)
  model = seq2seq(rj.gru(8), rj.gru(8), tasks.REVERSE_VOCAB, embed=4)
  p = model.init(jax.random.key(0))
  keep = np.flatnonzero(~held)  # the loss of the batch is the loss of
  sub = [a[:, keep] if a.ndim == 2 else a[keep] for a in b]  # its training strings alone
  # float32 sums over batches of different sizes: equal to rounding (a held-out string
  # counted in the loss would move it by about 1/len(keep) of one string's loss, ~1e-2)
  np.testing.assert_allclose(model.loss(p, *b), model.loss(p, *sub), rtol=1e-6)
  assert (
    abs(float(model.loss(p, *b._replace(tgt_len=b.src_len + 1))) - float(model.loss(p, *b))) > 1e-4
  )

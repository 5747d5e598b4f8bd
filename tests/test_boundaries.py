"""The HM-LSTM's applications: the word text, the boundary scores, the char-LM with slope
annealing and checkpoints, and a seconds-long smoke run of `rnnjax experiment boundaries`."""

import itertools
import json

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.apps import boundaries, charlm, cli
from rnnjax.apps.data import Corpus


def test_word_text_is_words_of_the_vocabulary_joined_by_single_spaces():
  text, vocab = boundaries.word_text(5000, words=50, successors=3, seed=1)
  words = text.split(" ")[:-1]  # the last word may be cut
  assert len(text) == 5000 and "  " not in text
  assert len(vocab) == 50 and all(2 <= len(w) <= 8 and w.isalpha() for w in vocab)
  assert set(words) <= set(vocab)
  followers = {}
  for a, b in itertools.pairwise(words):
    followers.setdefault(a, set()).add(b)
  assert max(len(f) for f in followers.values()) <= 3  # the Markov chain's successors


def test_boundary_scores_match_one_to_one_within_the_tolerance():
  ends = np.zeros(20, bool)
  ends[[4, 10, 16]] = True
  z = np.zeros(20, bool)
  z[[3, 4, 11, 14]] = True  # 3 and 4 both near 4: only one may match; 11 ~ 10; 14 misses 16
  s = boundaries.boundary_scores(z, ends)
  assert (s["precision"], s["recall"]) == (2 / 4, 2 / 3)
  assert s["boundary_f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
  assert boundaries.boundary_scores(z, ends, tolerance=0)["recall"] == 1 / 3
  assert boundaries.boundary_scores(np.zeros(20, bool), ends)["boundary_f1"] == 0.0


def test_the_hmlstm_char_lm_anneals_its_slope_and_resumes(tmp_path):
  corpus = Corpus(*(boundaries.word_text(4000, words=20)[0],) * 2, "words")
  model_cfg = charlm.ModelConfig(hidden=8, embed=4, layers=2, cell="hmlstm", a_steps=4)
  cfg = charlm.TrainConfig(batch=2, seq_len=8, minutes=0, max_steps=3, checkpoint_every=3)
  run = charlm.train_char_lm(corpus, model_cfg, cfg, out_dir=tmp_path, progress=False)
  assert float(run.params.rnn[0].slope) == pytest.approx(1.0 + 4.0 * 2 / 4)  # a(step 2)
  assert run.params.hm_out is not None and np.isfinite(run.val_bpc)
  model, params, _, meta = charlm.restore_model(tmp_path)
  assert meta["model"]["a_schedule"] == [5.0, 4]
  assert dict(model.cells[0].options)["a_schedule"] == rj.SlopeAnnealing(5.0, 4)
  np.testing.assert_array_equal(params.hm_out.w_gate, run.params.hm_out.w_gate)
  with pytest.raises(ValueError, match=r"HM-LSTM needs layers >= 2"):
    charlm.train_char_lm(
      corpus, model_cfg._replace(layers=1), cfg._replace(checkpoint_every=0), progress=False
    )


def test_experiment_boundaries_smoke(tmp_path, capsys):
  out = tmp_path / "b.json"
  argv = ["experiment", "boundaries", "--steps", "2", "--hidden", "8", "--batch", "2"]
  assert cli.main([*argv, "--no-progress", "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  for key in ("precision", "recall", "boundary_f1", "chance_f1", "boundary_rate", "loss_curve"):
    assert key in r
  assert len(r["boundary_rate"]) == 1 and r["steps"] == 2 and r["setup"]["layers"] == 2
  assert "level-1 boundaries against word ends" in capsys.readouterr().out
  zs = boundaries.boundaries_on(*_tiny_model(), jnp.arange(5) % 3)
  assert zs.shape == (2, 5) and zs.dtype == bool


def _tiny_model():
  text = boundaries.word_text(600, words=5)[0]
  corpus = Corpus(text, text, "tiny")
  model_cfg = charlm.ModelConfig(hidden=4, embed=2, layers=3, cell="hmlstm")
  cfg = charlm.TrainConfig(batch=1, seq_len=2, minutes=0, max_steps=1)
  run = charlm.train_char_lm(corpus, model_cfg, cfg, progress=False)
  return run.model, run.params

"""The HM-LSTM's applications: the word text, the boundary scores, the char-LM with slope
annealing and checkpoints, and a seconds-long smoke run of `rnnjax experiment boundaries`."""

import itertools
import json

import jax
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
  assert r["setup"]["boundary_penalty"] == boundaries.DEFAULTS["boundary_penalty"]
  assert "f1_curve" not in r and r["steps_per_second"] > 0 and len(r["load_average"]) == 3
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


def test_the_boundary_rate_term_adds_lambda_times_the_rates_gradient_and_nothing_to_the_loss():
  """char_lm(boundary_penalty=λ): a training pass's loss value is the cross-entropy and its
  gradient gains λ ∇ mean_{t,b} z_t^1, the rate taken here by a Python loop of the cell."""
  from rnnjax.apps.models.lm import char_lm
  from tests.helpers import assert_trees_close, f64

  V, T, B, lam = 7, 6, 3, 0.5
  plain = char_lm(V, 5, embed=3, layers=2, cell="hmlstm")
  penalised = char_lm(V, 5, embed=3, layers=2, cell="hmlstm", boundary_penalty=lam)
  params = f64(plain.init(jax.random.key(0)))
  params = params._replace(rnn=(rj.set_slope(params.rnn[0], 0.3),))  # a wide band: gradients
  ids = jax.random.randint(jax.random.key(1), (T, B), 0, V)
  targets = jax.random.randint(jax.random.key(2), (T, B), 0, V)
  key = jax.random.key(3)  # a training pass

  def loss(model):
    return jax.jit(jax.value_and_grad(lambda p: model.loss(p, ids, targets, None, key)[0]))(params)

  def rate(p):
    cell = plain.cells[0]
    xs = rj.embedding(V, 3).apply(p.embed, ids)
    carry, zs = cell.initial_carry((B,), jnp.float64), []
    for t in range(T):
      carry, _ = cell.step(p.rnn[0], carry, xs[t])
      zs.append(carry.z[0])
    return jnp.mean(jnp.stack(zs))

  (l0, g0), (l1, g1) = loss(plain), loss(penalised)
  g_rate = jax.jit(jax.grad(rate))(params)
  assert float(l1) == pytest.approx(float(l0), rel=1e-12)
  assert np.abs(np.asarray(g_rate.rnn[0].layers[0].b[-1])) > 0
  assert_trees_close(g1, jax.tree.map(lambda a, b: a + lam * b, g0, g_rate), rtol=1e-9, atol=1e-12)


def test_char_lm_boundary_options_are_checked():
  from rnnjax.apps.models.lm import char_lm

  with pytest.raises(ValueError, match=r"are for cell='hmlstm' only \(got cell='lstm'\)"):
    char_lm(7, 5, cell="lstm", boundary_penalty=0.1)
  with pytest.raises(ValueError, match=r"'straight_through' or 'reinforce', got 'gumbel'"):
    char_lm(7, 5, layers=2, cell="hmlstm", boundary_estimator="gumbel")


def test_experiment_boundaries_reinforce_and_the_f1_curve(tmp_path):
  out = tmp_path / "b.json"
  argv = ["experiment", "boundaries", "--steps", "5", "--hidden", "8", "--batch", "2"]
  extra = ["--estimator", "reinforce", "--boundary-penalty", "0.5", "--f1-curve"]
  assert cli.main([*argv, *extra, "--no-progress", "--json", str(out)]) == 0
  r = json.loads(out.read_text())
  assert r["setup"]["estimator"] == "reinforce" and r["setup"]["boundary_penalty"] == 0.5
  assert [s for s, _ in r["f1_curve"]] == [1, 2, 5] == boundaries.curve_steps(5)
  assert all(0 <= f <= 1 for _, f in r["f1_curve"])
  with pytest.raises(SystemExit):
    cli.main([*argv, "--boundary-penalty", "-1"])


def test_the_papers_benchmark_writes_its_keys(tmp_path):
  """benchmarks/papers/hmlstm_boundaries.py at a seconds-long size: the JSON has the
  issue's keys with sane values, and the markdown and the figure are written."""
  import importlib.util
  from pathlib import Path

  path = Path(__file__).resolve().parents[1] / "benchmarks" / "papers" / "hmlstm_boundaries.py"
  spec = importlib.util.spec_from_file_location("hmlstm_boundaries", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  figure = tmp_path / "f.png"
  argv = ["--steps", "2", "--seeds", "2", "--out", str(tmp_path), "--figure", str(figure)]
  assert bench.main([*argv, "--extra", "--hidden", "4", "--batch", "2"]) == 0
  r = json.loads((tmp_path / "hmlstm_boundaries.json").read_text())
  keys = {"paper", "command", "machine", "seeds", "f1", "precision", "recall", "chance_f1"}
  assert keys | {"steps", "minutes", "figure"} <= set(r)
  assert set(r["f1"]) >= {"mean", "std", "per_seed"} and r["seeds"] == [0, 1]
  assert len(r["f1"]["per_seed"]) == 2 and r["steps"] == [2, 2]
  assert r["f1"]["mean"] == pytest.approx(np.mean(r["f1"]["per_seed"]))
  assert r["f1"]["std"] == pytest.approx(np.std(r["f1"]["per_seed"], ddof=1))
  assert 0 <= r["f1"]["mean"] <= 1 and 0 <= r["chance_f1"]["mean"] <= 1
  assert r["command"].startswith("rnnjax experiment boundaries --seed SEED")
  assert r["paper"]["boundary_f1"] is None and "bits per character" in r["paper"]["reports"]
  assert figure.stat().st_size > 0 and r["figure"] == "docs/figures/papers/hmlstm_f1.png"
  assert "F1" in (tmp_path / "hmlstm_boundaries.md").read_text()


def test_the_estimator_comparison_writes_what_notebook_04_reads(tmp_path):
  """benchmarks/papers/hmlstm_estimators.py at a tiny size: both estimators' F1 curves and
  gradient moments, REINFORCE's gradient on the detector the noisier."""
  import importlib.util
  from pathlib import Path

  path = Path(__file__).resolve().parents[1] / "benchmarks" / "papers" / "hmlstm_estimators.py"
  spec = importlib.util.spec_from_file_location("hmlstm_estimators", path)
  bench = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(bench)
  argv = ["--steps", "2", "--variance-at", "2", "--draws", "4", "--out", str(tmp_path)]
  assert bench.main(argv) == 0
  r = json.loads((tmp_path / "hmlstm_estimators.json").read_text())
  for est in ("straight_through", "reinforce"):
    assert [s for s, _ in r["training"][est]["f1_curve"]] == [1, 2]
    assert r["variance"][est]["detector"]["total_variance"] > 0
  v = r["variance"]
  assert (
    v["reinforce"]["detector"]["total_variance"]
    > v["straight_through"]["detector"]["total_variance"]
  )
  assert "--boundary-penalty" in r["command"]

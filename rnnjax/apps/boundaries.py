"""The hierarchy an HM-LSTM discovers, measured: boundaries against known word ends.

`word_text` writes synthetic text with known structure: words drawn from a
fixed vocabulary of random-letter words, one space between words; by default
each word is drawn independently and uniformly (optionally, a first-order
Markov chain in which each word has a few possible successors).

`run_boundaries` trains a character-level HM-LSTM on it with the char-LM's
training code (`rnnjax.apps.charlm`), then reads the first level's boundaries
``z_t^1`` on held-out text and scores them against the word ends:

* the word ends are the positions of the spaces: the step whose input is the
  space closes a word;
* a boundary within one step of a word end matches it (the paper's figures
  show boundaries on the word's last letter as well as on the space), each
  word end and each boundary matched at most once;
* ``precision`` = matched boundaries / boundaries, ``recall`` = matched word
  ends / word ends, ``boundary_f1`` their harmonic mean; ``chance_f1`` is the
  F1 of boundaries placed at random at the same rate, the score to beat.
"""

from __future__ import annotations

import os
import string
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from rnnjax.apps import charlm
from rnnjax.apps.data import Corpus, Vocab

DEFAULTS: dict[str, Any] = dict(
  minutes=5.0,
  layers=2,
  hidden=32,
  words=300,
  successors=None,
  batch=32,
  seq_len=64,
  lr=3e-3,
  a_steps=1000,
  boundary_penalty=0.01,
  estimator="straight_through",
)
"""The command's defaults (`rnnjax experiment boundaries`), the ones its stored result used."""


def word_text(
  n_chars: int, *, words: int = 300, successors: int | None = None, seed: int = 0
) -> tuple[str, list[str]]:
  """Text of random-letter words joined by single spaces.

  Args:
    n_chars: the text's length, at least.
    words: the vocabulary size (a few hundred).
    successors: how many words may follow each word (drawn uniformly among
      them), or None: every word is drawn uniformly from the whole vocabulary.
    seed: the vocabulary's and the chain's seed.

  Returns:
    ``(text, vocabulary)``; every word has 2..8 lowercase letters.
  """
  rng = np.random.default_rng(seed)
  letters = np.array(list(string.ascii_lowercase))
  vocab = sorted({"".join(rng.choice(letters, rng.integers(2, 9))) for _ in range(2 * words)})
  vocab = [vocab[i] for i in rng.permutation(len(vocab))[:words]]
  nxt = None if successors is None else rng.integers(0, len(vocab), (len(vocab), successors))
  out, n, w = [], 0, 0
  while n < n_chars:
    out.append(vocab[w])
    n += len(vocab[w]) + 1
    w = int(rng.integers(len(vocab)) if nxt is None else nxt[w, rng.integers(nxt.shape[1])])
  return " ".join(out)[:n_chars], vocab


def boundary_scores(boundaries: np.ndarray, ends: np.ndarray, tolerance: int = 1) -> dict[str, Any]:
  """Precision, recall and F1 of ``boundaries`` against ``ends`` (both ``[T]`` bool),
  matching each to the nearest unmatched one within ``tolerance`` steps."""
  pred, true = np.flatnonzero(boundaries), np.flatnonzero(ends)
  used = np.zeros(len(true), bool)
  hits = 0
  for t in pred:
    lo, hi = np.searchsorted(true, [t - tolerance, t + tolerance + 1])
    free = [j for j in range(lo, hi) if not used[j]]
    if free:
      used[min(free, key=lambda j: abs(int(true[j]) - t))] = True
      hits += 1
  precision = hits / len(pred) if len(pred) else 0.0
  recall = hits / len(true) if len(true) else 0.0
  f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
  return dict(precision=precision, recall=recall, boundary_f1=f1, tolerance=tolerance)


def boundaries_on(
  model: Any, params: Any, ids: jax.Array, slope: float | None = None
) -> np.ndarray:
  """Every level's boundary ``z_t^l`` (``[L-1, T]`` bool) on one stream ``ids: [T]``."""
  p = params if slope is None else params._replace(rnn=(rj.set_slope(params.rnn[0], slope),))
  return np.asarray(_boundaries(model, p, ids)) > 0.5


def _boundaries(model: Any, params: Any, ids: jax.Array) -> jax.Array:
  """``[L-1, T]`` boundaries (0. or 1.) of ``params`` on ``ids: [T]``."""
  cell = model.cells[0]
  xs = rj.embedding(model.vocab_size, params.embed.table.shape[-1]).apply(params.embed, ids)
  xs = xs[:, None]  # [T, 1, E]

  def body(carry: Any, x: jax.Array) -> tuple[Any, Any]:
    carry, _ = cell.step(params.rnn[0], carry, x)
    return carry, carry.z

  _, zs = jax.lax.scan(body, cell.initial_carry((1,)), xs)
  return jnp.stack([z[:, 0, 0] for z in zs])


def curve_steps(limit: int = 10**7) -> list[int]:
  """The steps at which `run_boundaries` scores F1 during training: 1, 2, 5, 10, 20, 50, ..."""
  return [m * 10**e for e in range(8) for m in (1, 2, 5) if m * 10**e <= limit]


def word_corpus(
  *, words: int = 300, successors: int | None = None, seed: int = 0, eval_chars: int = 20_000
) -> tuple[Corpus, list[str]]:
  """`word_text` split into 2,000,000 training and ``eval_chars`` held-out characters."""
  text, vocab = word_text(2_000_000 + eval_chars, words=words, successors=successors, seed=seed)
  source = f"word_text(words={words}, successors={successors}, seed={seed})"
  return Corpus(text[:-eval_chars], text[-eval_chars:], source), vocab


def score(run: charlm.CharLMRun, corpus: Corpus, seed: int = 0) -> dict[str, Any]:
  """A trained HM-LSTM char-LM's boundaries on ``corpus.val``, scored (see the module
  docstring): level 1's ``precision``, ``recall`` and ``boundary_f1`` against the word
  ends, ``chance_f1``, every level's ``boundary_rate``, ``val_bpc``, and a ``sample``
  of the text with level 1's boundaries marked ``|``."""
  ids = jnp.asarray(run.vocab.encode(corpus.val))
  zs = boundaries_on(run.model, run.params, ids)
  ends = np.array([ch == " " for ch in corpus.val])
  rng = np.random.default_rng(seed)
  chance = boundary_scores(rng.random(len(ends)) < zs[0].mean(), ends)  # same rate, at random
  return dict(
    **boundary_scores(zs[0], ends),
    chance_f1=chance["boundary_f1"],
    boundary_rate=[float(z.mean()) for z in zs],
    word_end_rate=float(ends.mean()),
    val_bpc=run.val_bpc,
    sample=dict(
      text=corpus.val[:200],
      boundaries="".join("|" if z else " " for z in zs[0][:200]),
    ),
  )


def run_boundaries(
  minutes: float = DEFAULTS["minutes"],
  *,
  layers: int = DEFAULTS["layers"],
  hidden: int = DEFAULTS["hidden"],
  words: int = DEFAULTS["words"],
  successors: int | None = DEFAULTS["successors"],
  batch: int = DEFAULTS["batch"],
  seq_len: int = DEFAULTS["seq_len"],
  lr: float = DEFAULTS["lr"],
  a_steps: int = DEFAULTS["a_steps"],
  a_max: float = 5.0,
  boundary_penalty: float = DEFAULTS["boundary_penalty"],
  estimator: str = DEFAULTS["estimator"],
  steps: int | None = None,
  seed: int = 0,
  eval_chars: int = 20_000,
  f1_curve: bool = False,
  progress: bool = True,
) -> dict[str, Any]:
  """Train an HM-LSTM char-LM on `word_text` and score its first level's boundaries.

  Args:
    minutes: the wall-clock training budget (ignored with ``steps``).
    layers: the HM-LSTM's levels (2 or 3).
    hidden: units per level.
    words: the vocabulary size of the text.
    successors: how many words may follow each word (None: independent draws).
    batch: sequences per step.
    seq_len: the truncated-BPTT window.
    lr: the peak Adam learning rate (cosine-decayed over the budget).
    a_steps: the steps the slope takes to reach ``a_max``
      (`rnnjax.slope_annealing(a_max, a_steps)`).
    a_max: the final slope; ``a_max=1`` trains without annealing.
    boundary_penalty: ``λ``, the boundary-rate term of `rnnjax.apps.models.lm.char_lm`
      (a deviation from the paper): each first-level boundary costs ``λ`` nats in training.
    estimator: the boundaries' gradient estimator in training, ``"straight_through"``
      (the paper's) or ``"reinforce"`` (the higher-variance option; `char_lm`).
    steps: a step budget instead of ``minutes`` (deterministic; for tests).
    seed: the text's and the weights' seed.
    eval_chars: the held-out text scored.
    f1_curve: also score level 1's boundaries during training, at steps
      1, 2, 5, 10, 20, 50, ... (`curve_steps`), on the first 2,000 held-out
      characters (the time counts against ``minutes``: about a second in all).
    progress: show a progress bar.

  Returns:
    A JSON-ready dict: ``precision``, ``recall``, ``boundary_f1`` (level 1
    against the word ends), ``boundary_rate`` per level, the validation
    ``val_bpc``, the ``loss_curve`` (``[step, bpc]`` rows), and the setup.
  """
  corpus, vocab = word_corpus(words=words, successors=successors, seed=seed, eval_chars=eval_chars)
  curve: list[list[float]] = []  # [step, F1] rows
  monitor = None
  if f1_curve:
    marks = set(curve_steps())
    head = corpus.val[:2000]
    ids = jnp.asarray(Vocab.from_text(corpus.train).encode(head))  # train_char_lm's vocabulary
    ends = np.array([ch == " " for ch in head])
    jitted: list[Any] = []

    def monitor(step: int, model: charlm.CharLM, params: Any) -> None:
      if step in marks:
        if not jitted:
          jitted.append(jax.jit(lambda p, ids: _boundaries(model, p, ids)))
        zs = np.asarray(jitted[0](params, ids)) > 0.5
        curve.append([step, boundary_scores(zs[0], ends)["boundary_f1"]])

  t0 = time.perf_counter()
  run = charlm.train_char_lm(
    corpus,
    charlm.ModelConfig(
      hidden=hidden,
      embed=32,
      layers=layers,
      cell="hmlstm",
      a_max=a_max,
      a_steps=a_steps,
      boundary_penalty=boundary_penalty,
      boundary_estimator=estimator,
    ),
    charlm.TrainConfig(
      batch=batch, seq_len=seq_len, lr=lr, minutes=minutes or 0.0, max_steps=steps, seed=seed
    ),
    progress=progress,
    monitor=monitor,
  )
  seconds = time.perf_counter() - t0
  return dict(
    **score(run, corpus, seed),
    steps=run.steps,
    train_seconds=run.train_seconds,
    steps_per_second=run.steps / run.train_seconds if run.train_seconds else None,
    load_average=[round(x, 2) for x in os.getloadavg()],  # the machine's load at the end
    seconds=seconds,
    final_slope=float(run.params.rnn[0].slope),
    loss_curve=[[h["step"], h["bpc"]] for h in run.history],
    **(dict(f1_curve=curve) if f1_curve else {}),
    setup=dict(
      layers=layers,
      hidden=hidden,
      words=words,
      successors=successors,
      vocabulary_sample=vocab[:10],
      batch=batch,
      seq_len=seq_len,
      lr=lr,
      a_schedule=dict(a_max=a_max, steps=a_steps),
      boundary_penalty=boundary_penalty,
      estimator=estimator,
      minutes=None if steps else minutes,
      max_steps=steps,
      seed=seed,
      eval_chars=eval_chars,
    ),
  )

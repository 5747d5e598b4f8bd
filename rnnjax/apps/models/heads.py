"""Many-to-one and many-to-many-aligned models: a sequence classifier and a
bidirectional tagger, both over padded batches with ``lengths``.

    classifier:  ŷ = softmax(h_L U + b)              h_L: the state after the last valid step
    tagger:      ŷ_t = softmax([h→_t ; h←_t] U + b)   both directions inside each length
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import rnnjax as rj
from rnnjax.apps.models import readout


class SequenceModel(NamedTuple):
  """A model over padded batches of token ids as pure functions."""

  init: Callable[[jax.Array], Any]
  apply: Callable[..., jax.Array]  # (params, ids [T, B], lengths [B]) -> logits
  loss: Callable[..., jax.Array]  # (params, ids, lengths, labels) -> mean cross-entropy
  predict: Callable[..., jax.Array]  # (params, ids, lengths) -> labels


def _model(
  init: Callable[[jax.Array], Any], apply: Callable[..., jax.Array], loss: Callable[..., jax.Array]
) -> SequenceModel:
  def predict(params: Any, ids: jax.Array, lengths: jax.Array) -> jax.Array:
    return jnp.argmax(apply(params, ids, lengths), -1)

  return SequenceModel(init, apply, loss, predict)


def classifier(cell: rj.Cell, vocab_size: int, num_classes: int, embed: int = 32) -> SequenceModel:
  """Embedding -> ``cell`` -> final state -> softmax over ``num_classes``."""
  emb = rj.embedding(vocab_size, embed)

  def init(key: jax.Array) -> dict[str, Any]:
    ke, kc, kh = jax.random.split(key, 3)
    return {
      "embed": emb.init(ke),
      "rnn": cell.init(kc, embed),
      "head": readout.init_dense(kh, cell.hidden_size, num_classes),
    }

  def apply(params: dict[str, Any], ids: jax.Array, lengths: jax.Array) -> jax.Array:
    carry, _ = rj.scan(cell, params["rnn"], emb.apply(params["embed"], ids), lengths=lengths)
    return readout.dense(params["head"], cell.output(carry))  # [B, C]

  def loss(
    params: dict[str, Any], ids: jax.Array, lengths: jax.Array, labels: jax.Array
  ) -> jax.Array:
    return jnp.mean(readout.cross_entropy(apply(params, ids, lengths), labels))

  return _model(init, apply, loss)


def tagger(
  cell_fwd: rj.Cell, cell_bwd: rj.Cell, vocab_size: int, num_tags: int, embed: int = 32
) -> SequenceModel:
  """Embedding -> bidirectional (``cell_fwd``, ``cell_bwd``) -> per-step softmax.
  The loss averages over valid steps only."""
  emb = rj.embedding(vocab_size, embed)

  def init(key: jax.Array) -> dict[str, Any]:
    ke, kf, kb, kh = jax.random.split(key, 4)
    return {
      "embed": emb.init(ke),
      "fwd": cell_fwd.init(kf, embed),
      "bwd": cell_bwd.init(kb, embed),
      "head": readout.init_dense(kh, cell_fwd.hidden_size + cell_bwd.hidden_size, num_tags),
    }

  def apply(params: dict[str, Any], ids: jax.Array, lengths: jax.Array) -> jax.Array:
    _, ys = rj.bidirectional(
      (cell_fwd, params["fwd"]),
      (cell_bwd, params["bwd"]),
      emb.apply(params["embed"], ids),
      lengths=lengths,
    )
    return readout.dense(params["head"], ys)  # [T, B, C]

  def loss(
    params: dict[str, Any], ids: jax.Array, lengths: jax.Array, tags: jax.Array
  ) -> jax.Array:
    return readout.masked_mean(readout.cross_entropy(apply(params, ids, lengths), tags), lengths)

  return _model(init, apply, loss)

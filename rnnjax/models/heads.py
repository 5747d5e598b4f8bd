"""Many-to-one and many-to-many-aligned models: a sequence classifier and a
bidirectional tagger, both over padded batches with ``lengths``.

    classifier:  ŷ = softmax(h_{L} U + b)            h_L: the state after each sequence's last valid step
    tagger:      ŷ_t = softmax([h→_t ; h←_t] U + b)   both directions inside each length
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax import init as inits
from rnnjax.layers import bidirectional, embedding
from rnnjax.scan import scan


class SequenceModel(NamedTuple):
  init: Any
  apply: Any      # (params, ids [T, B], lengths [B]) -> logits
  loss: Any       # (params, ids, lengths, labels) -> mean cross-entropy
  predict: Any    # (params, ids, lengths) -> labels


def _head(key, fan_in, classes):
  return {"w": inits.lecun_normal()(key, (fan_in, classes), jnp.float32),
          "b": jnp.zeros((classes,), jnp.float32)}


def classifier(cell, vocab_size: int, num_classes: int, embed: int = 32) -> SequenceModel:
  """Embedding -> ``cell`` -> final state -> softmax over ``num_classes``."""
  emb = embedding(vocab_size, embed)

  def init(key):
    ke, kc, kh = jax.random.split(key, 3)
    return {"embed": emb.init(ke), "rnn": cell.init(kc, embed),
            "head": _head(kh, cell.hidden_size, num_classes)}

  def apply(params, ids, lengths):
    carry, _ = scan(cell, params["rnn"], emb.apply(params["embed"], ids), lengths=lengths)
    return cell.output(carry) @ params["head"]["w"] + params["head"]["b"][None]   # [B, C]

  def loss(params, ids, lengths, labels):
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(
        apply(params, ids, lengths), labels))

  return SequenceModel(init, apply, loss, lambda p, ids, L: jnp.argmax(apply(p, ids, L), -1))


def tagger(cell_fwd, cell_bwd, vocab_size: int, num_tags: int, embed: int = 32) -> SequenceModel:
  """Embedding -> bidirectional (``cell_fwd``, ``cell_bwd``) -> per-step softmax.
  The loss averages over valid steps only."""
  emb = embedding(vocab_size, embed)

  def init(key):
    ke, kf, kb, kh = jax.random.split(key, 4)
    return {"embed": emb.init(ke), "fwd": cell_fwd.init(kf, embed), "bwd": cell_bwd.init(kb, embed),
            "head": _head(kh, cell_fwd.hidden_size + cell_bwd.hidden_size, num_tags)}

  def apply(params, ids, lengths):
    _, ys = bidirectional((cell_fwd, params["fwd"]), (cell_bwd, params["bwd"]),
                          emb.apply(params["embed"], ids), lengths=lengths)
    return ys @ params["head"]["w"] + params["head"]["b"][None, None]        # [T, B, C]

  def loss(params, ids, lengths, tags):
    nll = optax.softmax_cross_entropy_with_integer_labels(apply(params, ids, lengths), tags)
    mask = jnp.arange(ids.shape[0])[:, None] < lengths[None, :]
    return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.maximum(jnp.sum(mask), 1)

  return SequenceModel(init, apply, loss, lambda p, ids, L: jnp.argmax(apply(p, ids, L), -1))

"""A character-level language model: embedding -> RNN layers -> softmax.

    e_t = E[x_t]                       # [B, E]
    h_t^{(l)} = RNN_l(h_t^{(l-1)}, h_{t-1}^{(l)})
    ŷ_t = softmax(h_t^{(L)} U + b_y)   # the lecture's ŷ^t = softmax(U h^t + b_y)
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax import init as inits
from rnnjax.cells import elman, gru, lstm
from rnnjax.layers import EmbeddingParams, embedding, stacked

Array = Any
CELLS = {"lstm": lstm, "gru": gru, "elman": elman}


class CharLMParams(NamedTuple):
  embed: EmbeddingParams
  rnn: tuple       # one params NamedTuple per layer
  w_out: Array     # [H, V]   the lecture's Uᵀ
  b_out: Array     # [V]      b_y


class CharLM(NamedTuple):
  """The model as pure functions (see `char_lm`)."""
  vocab_size: int
  cells: tuple
  init: Any
  initial_carry: Any
  apply: Any
  loss: Any
  sample: Any
  config: dict


def char_lm(vocab_size: int, hidden: int = 256, *, embed: int = 64, layers: int = 1,
            cell: str = "lstm") -> CharLM:
  """A character LM with ``layers`` stacked cells of kind ``cell``.

  Functions of the returned `CharLM`:
    ``init(key) -> CharLMParams``;
    ``initial_carry(batch) -> list of carries``;
    ``apply(params, ids [T, B], carries=None) -> (carries, logits [T, B, V])``;
    ``loss(params, ids, targets, carries=None) -> (mean nats per char, carries)``;
    ``sample(params, key, prime_ids [P], n, temperature=1.0) -> ids [n]``.
  """
  if cell not in CELLS:
    raise ValueError(f"char_lm: unknown cell {cell!r}; expected one of {sorted(CELLS)}")
  if layers < 1:
    raise ValueError(f"char_lm: layers must be >= 1, got {layers}")
  cells = tuple(CELLS[cell](hidden) for _ in range(layers))
  emb = embedding(vocab_size, embed)

  def init(key) -> CharLMParams:
    ke, ko, *kl = jax.random.split(key, 2 + layers)
    sizes = [embed] + [hidden] * (layers - 1)
    return CharLMParams(
        embed=emb.init(ke),
        rnn=tuple(c.init(k, s) for c, k, s in zip(cells, kl, sizes)),
        w_out=inits.lecun_normal()(ko, (hidden, vocab_size), jnp.float32),
        b_out=jnp.zeros((vocab_size,), jnp.float32))

  def initial_carry(batch: int):
    return [c.initial_carry((batch,)) for c in cells]

  def apply(params, ids, carries=None, **scan_kw):
    xs = emb.apply(params.embed, ids)                       # [T, B, E]
    carries, hs = stacked(list(zip(cells, params.rnn)), xs, carries, **scan_kw)
    return carries, hs @ params.w_out + params.b_out[None, None]   # [T, B, V]

  def loss(params, ids, targets, carries=None, **scan_kw):
    carries, logits = apply(params, ids, carries, **scan_kw)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    return jnp.mean(nll), carries

  @partial(jax.jit, static_argnames=("n",))
  def sample(params, key, prime_ids, n: int, temperature: float = 1.0):
    carries = initial_carry(1)
    carries, logits = apply(params, prime_ids[:, None], carries)
    last = logits[-1, 0]

    def body(state, k):
      carries, logits = state
      nxt = jax.random.categorical(k, logits / temperature)
      x = params.embed.table[nxt][None]                    # [1, E]
      new = []
      for c, p, carry in zip(cells, params.rnn, carries):
        carry, x = c.step(p, carry, x)
        new.append(carry)
      return (new, (x @ params.w_out + params.b_out[None])[0]), nxt

    _, out = jax.lax.scan(body, (carries, last), jax.random.split(key, n))
    return out

  return CharLM(vocab_size, cells, init, initial_carry, apply, loss, sample,
                dict(vocab_size=vocab_size, hidden=hidden, embed=embed, layers=layers, cell=cell))

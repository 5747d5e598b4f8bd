"""An encoder-decoder (Sutskever et al. 2014) with teacher forcing and greedy decoding.

    encoder:  c = RNN_enc(E x_1 .. E x_L)                 (final carry, inside each length)
    decoder:  s_0 = c;  s_t = RNN_dec(s_{t-1}, E y_{t-1});  ŷ_t = softmax(h(s_t) U + b)

Training feeds the true previous token (teacher forcing, ``y_0 = BOS``);
decoding feeds back its own argmax until ``EOS``. Token ids: 0 pad, 1 BOS, 2 EOS.
"""

from __future__ import annotations

from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from rnnjax import init as inits
from rnnjax.layers import embedding
from rnnjax.scan import scan

PAD, BOS, EOS = 0, 1, 2


class Seq2Seq(NamedTuple):
  init: Any
  loss: Any        # (params, src [S, B], src_len [B], tgt [T, B], tgt_len [B]) -> mean CE
  decode: Any      # (params, src, src_len, max_len) -> tokens [max_len, B]


def seq2seq(encoder, decoder, vocab_size: int, embed: int = 32) -> Seq2Seq:
  """``encoder`` and ``decoder`` cells must share the carry structure and size."""
  if encoder.hidden_size != decoder.hidden_size or encoder.name != decoder.name:
    raise ValueError(f"seq2seq: the encoder's final carry starts the decoder, so both cells must "
                     f"be of one kind and size; got {encoder!r} and {decoder!r}")
  emb = embedding(vocab_size, embed)

  def init(key):
    ks, kt, ke, kd, kh = jax.random.split(key, 5)
    return {"src_embed": emb.init(ks), "tgt_embed": emb.init(kt),
            "enc": encoder.init(ke, embed), "dec": decoder.init(kd, embed),
            "head": {"w": inits.lecun_normal()(kh, (decoder.hidden_size, vocab_size), jnp.float32),
                     "b": jnp.zeros((vocab_size,), jnp.float32)}}

  def encode(params, src, src_len):
    carry, _ = scan(encoder, params["enc"], emb.apply(params["src_embed"], src), lengths=src_len)
    return carry

  def loss(params, src, src_len, tgt, tgt_len):
    carry = encode(params, src, src_len)
    dec_in = jnp.concatenate([jnp.full((1, tgt.shape[1]), BOS, tgt.dtype), tgt[:-1]])  # teacher forcing
    _, ys = scan(decoder, params["dec"], emb.apply(params["tgt_embed"], dec_in), carry,
                 lengths=tgt_len)
    logits = ys @ params["head"]["w"] + params["head"]["b"][None, None]
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    mask = jnp.arange(tgt.shape[0])[:, None] < tgt_len[None, :]
    return jnp.sum(jnp.where(mask, nll, 0.0)) / jnp.sum(mask)

  @partial(jax.jit, static_argnames="max_len")
  def decode(params, src, src_len, max_len: int):
    carry = encode(params, src, src_len)

    def body(state, _):
      carry, tok, done = state
      x = emb.apply(params["tgt_embed"], tok)
      carry, h = decoder.step(params["dec"], carry, x)
      nxt = jnp.argmax(h @ params["head"]["w"] + params["head"]["b"][None], -1).astype(tok.dtype)
      nxt = jnp.where(done, PAD, nxt)
      return (carry, nxt, done | (nxt == EOS)), nxt

    B = src.shape[1]
    start = (carry, jnp.full((B,), BOS, jnp.int32), jnp.zeros((B,), bool))
    _, toks = jax.lax.scan(body, start, None, length=max_len)
    return toks

  return Seq2Seq(init, loss, decode)

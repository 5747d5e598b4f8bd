"""An encoder-decoder (Sutskever et al. 2014) with teacher forcing and greedy decoding.

    encoder:  c = RNN_enc(E x_1 .. E x_L)                 (final carry, inside each length)
    decoder:  s_0 = c;  s_t = RNN_dec(s_{t-1}, E y_{t-1});  ŷ_t = softmax(h(s_t) U + b)

Training feeds the true previous token (teacher forcing, ``y_0 = BOS``);
decoding feeds back its own argmax until ``EOS``. Token ids: 0 pad, 1 BOS, 2 EOS.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

import rnnjax as rj
from rnnjax.apps.models import readout

PAD, BOS, EOS = 0, 1, 2


class Seq2Seq(NamedTuple):
  """The encoder-decoder as pure functions (see `seq2seq`)."""

  init: Callable[[jax.Array], dict[str, Any]]
  loss: Callable[..., jax.Array]  # (params, src [S, B], src_len [B], tgt [T, B], tgt_len [B])
  decode: Callable[..., jax.Array]  # (params, src, src_len, max_len) -> tokens [max_len, B]


def seq2seq(encoder: rj.Cell, decoder: rj.Cell, vocab_size: int, embed: int = 32) -> Seq2Seq:
  """``encoder`` and ``decoder`` cells must share the carry structure and size."""
  if encoder.hidden_size != decoder.hidden_size or encoder.name != decoder.name:
    raise ValueError(
      f"seq2seq: the encoder's final carry starts the decoder, so both cells must "
      f"be of one kind and size; got {encoder!r} and {decoder!r}"
    )
  emb = rj.embedding(vocab_size, embed)

  def init(key: jax.Array) -> dict[str, Any]:
    ks, kt, ke, kd, kh = jax.random.split(key, 5)
    return {
      "src_embed": emb.init(ks),
      "tgt_embed": emb.init(kt),
      "enc": encoder.init(ke, embed),
      "dec": decoder.init(kd, embed),
      "head": readout.init_dense(kh, decoder.hidden_size, vocab_size),
    }

  def encode(params: dict[str, Any], src: jax.Array, src_len: jax.Array) -> Any:
    carry, _ = rj.scan(encoder, params["enc"], emb.apply(params["src_embed"], src), lengths=src_len)
    return carry

  def loss(
    params: dict[str, Any], src: jax.Array, src_len: jax.Array, tgt: jax.Array, tgt_len: jax.Array
  ) -> jax.Array:
    carry = encode(params, src, src_len)
    bos = jnp.full((1, tgt.shape[1]), BOS, tgt.dtype)
    dec_in = jnp.concatenate([bos, tgt[:-1]])  # teacher forcing
    _, ys = rj.scan(
      decoder, params["dec"], emb.apply(params["tgt_embed"], dec_in), carry, lengths=tgt_len
    )
    nll = readout.cross_entropy(readout.dense(params["head"], ys), tgt)
    return readout.masked_mean(nll, tgt_len)

  @partial(jax.jit, static_argnames="max_len")
  def decode(params: dict[str, Any], src: jax.Array, src_len: jax.Array, max_len: int) -> jax.Array:
    carry = encode(params, src, src_len)

    def body(state: Any, _: Any) -> tuple[Any, jax.Array]:
      carry, tok, done = state
      x = emb.apply(params["tgt_embed"], tok)
      carry, h = decoder.step(params["dec"], carry, x)
      nxt = jnp.argmax(readout.dense(params["head"], h), -1).astype(tok.dtype)
      nxt = jnp.where(done, PAD, nxt)
      return (carry, nxt, done | (nxt == EOS)), nxt

    B = src.shape[1]
    start = (carry, jnp.full((B,), BOS, jnp.int32), jnp.zeros((B,), bool))
    _, toks = jax.lax.scan(body, start, None, length=max_len)
    return toks

  return Seq2Seq(init, loss, decode)

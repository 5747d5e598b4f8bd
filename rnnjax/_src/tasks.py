"""The implementation of `rnnjax.tasks`, whose module docstring documents it.

Long-range synthetic tasks with their analytic baselines (Arjovsky et al. 2016).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._src import arguments
from rnnjax._src.typing import Array

__all__ = [
  "ADDING_BASELINE",
  "BLANK",
  "COPY_CLASSES",
  "COPY_LENGTH",
  "COPY_SYMBOLS",
  "DELIMITER",
  "DIGIT0",
  "REVERSE_VOCAB",
  "Batch",
  "Seq2SeqBatch",
  "adding",
  "adding_baseline",
  "copy_baseline",
  "copy_memory",
  "held_out",
  "reverse_digits",
]

ADDING_BASELINE = 1.0 / 6.0
"""The adding problem's MSE of predicting the mean, 1: ``Var(X₁ + X₂) = 1/6``."""

COPY_SYMBOLS = 8
"""The copy-memory alphabet's size (tokens ``1..8``)."""

COPY_LENGTH = 10
"""How many symbols the copy-memory task asks to remember."""

BLANK = 0
"""The copy-memory blank token."""

DELIMITER = COPY_SYMBOLS + 1
"""The copy-memory token that asks for the symbols back (9)."""

COPY_CLASSES = COPY_SYMBOLS + 2  # blank, 8 symbols, delimiter
"""The copy-memory vocabulary: blank, 8 symbols, delimiter (10)."""


class Batch(NamedTuple):
  """A batch of the adding or the copy-memory task.

  Attributes:
    xs: ``[T', B, I]`` time-major inputs (``T' = T``, ``I = 2`` for adding;
      ``T' = T + 20``, one-hot ``I = 10`` for copy memory).
    targets: adding: ``[B]`` floats; copy memory: ``[T', B]`` integer classes.
  """

  xs: jax.Array  # [T', B, I]
  targets: jax.Array  # adding: [B]; copy: [T', B] int


def _check_T(T: int, minimum: int, what: str) -> None:
  arguments.positive_int("T", T, what)
  if minimum > T:
    raise ValueError(f"{what}: T must be an int >= {minimum}, got {T!r}")


def adding(key: Array, batch: int, T: int) -> Batch:
  """An adding-problem batch.

  Channel 0 holds values ``U[0, 1]``; channel 1 marks one step in each half
  of the sequence; the target is the sum of the two marked values.

  Args:
    key: PRNG key.
    batch: B.
    T: the sequence length (``>= 2``).

  Returns:
    `Batch` with ``xs: [T, B, 2]`` and ``targets: [B]``.

  Raises:
    ValueError: ``T`` is not an int ``>= 2``.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> xs, targets = rj.tasks.adding(jax.random.key(0), 3, 10)
    >>> xs.shape, targets.shape
    ((10, 3, 2), (3,))
    >>> xs[:, :, 1].sum(axis=0).tolist()        # two markers per sequence
    [2.0, 2.0, 2.0]
    >>> bool(jnp.allclose(targets, (xs[..., 0] * xs[..., 1]).sum(axis=0)))
    True
  """
  _check_T(T, 2, "adding")
  kv, k1, k2 = jax.random.split(key, 3)
  values = jax.random.uniform(kv, (T, batch))
  half = T // 2
  i1 = jax.random.randint(k1, (batch,), 0, half)
  i2 = jax.random.randint(k2, (batch,), half, T)
  t = jnp.arange(T)[:, None]
  marker = ((t == i1[None]) | (t == i2[None])).astype(values.dtype)
  return Batch(jnp.stack([values, marker], -1), jnp.sum(values * marker, 0))


def adding_baseline(T: int) -> float:
  """The adding problem's baseline MSE, the same for every ``T``.

  Args:
    T: the sequence length (unused; the signature matches `copy_baseline`).

  Returns:
    `ADDING_BASELINE`, ``1/6``.
  """
  return ADDING_BASELINE


def copy_memory(key: Array, batch: int, T: int) -> Batch:
  """A copy-memory batch of ``T + 20`` steps.

  The inputs are 10 symbols, ``T − 1`` blanks, the delimiter and 10 blanks;
  the targets are ``T + 10`` blanks, then the 10 symbols.

  Args:
    key: PRNG key.
    batch: B.
    T: the delay (``>= 1``).

  Returns:
    `Batch` with one-hot ``xs: [T+20, B, 10]`` and integer
    ``targets: [T+20, B]``.

  Raises:
    ValueError: ``T`` is not a positive int.

  Examples:
    >>> import jax, rnnjax as rj
    >>> xs, targets = rj.tasks.copy_memory(jax.random.key(0), 2, 5)
    >>> xs.shape, targets.shape
    ((25, 2, 10), (25, 2))
    >>> bool((targets[-10:] == xs[:10].argmax(-1)).all())   # the symbols, copied
    True
  """
  _check_T(T, 1, "copy_memory")
  L = COPY_LENGTH
  symbols = jax.random.randint(key, (L, batch), 1, COPY_SYMBOLS + 1)
  blanks = jnp.zeros((T - 1, batch), jnp.int32)
  inputs = jnp.concatenate(
    [symbols, blanks, jnp.full((1, batch), DELIMITER), jnp.zeros((L, batch), jnp.int32)]
  )
  targets = jnp.concatenate([jnp.zeros((T + L, batch), jnp.int32), symbols])
  return Batch(jax.nn.one_hot(inputs, COPY_CLASSES), targets)


def copy_baseline(T: int) -> float:
  """The copy-memory cross-entropy per step of a memoryless model.

  It outputs blanks, then uniform guesses over the 8 symbols:
  ``10 · ln 8 / (T + 20)``.

  Args:
    T: the delay.

  Returns:
    The baseline, in nats per step.

  Examples:
    >>> import rnnjax as rj
    >>> round(rj.tasks.copy_baseline(100), 4)
    0.1733
  """
  return COPY_LENGTH * math.log(COPY_SYMBOLS) / (T + 2 * COPY_LENGTH)


# ----------------------------------------------------------------- sequence transduction
DIGIT0 = 3  # token of digit 0 (0 pad, 1 BOS, 2 EOS)
"""The digit-reversal token of digit 0 (0 is padding, 1 BOS, 2 EOS)."""

REVERSE_VOCAB = DIGIT0 + 10
"""The digit-reversal vocabulary: pad, BOS, EOS and ten digits (13)."""


class Seq2SeqBatch(NamedTuple):
  """A batch of the digit-reversal task, time-major and padded with 0.

  Attributes:
    src: ``[L, B]`` digit tokens (``L = max_len``).
    src_len: ``[B]`` valid lengths.
    tgt: ``[L + 1, B]``: the reversed digits, then EOS.
    tgt_len: ``[B]``, ``src_len + 1``.
  """

  src: jax.Array  # [L, B] tokens, padded with 0
  src_len: jax.Array  # [B]
  tgt: jax.Array  # [L + 1, B]: the reversed digits, then EOS, padded
  tgt_len: jax.Array  # [B] = src_len + 1


def held_out(src: jax.Array, src_len: jax.Array) -> jax.Array:
  """The digit-reversal split: a string is held out of training when the sum
  of its digits is a multiple of 10.

  One string in ten of every length is held out (of the one-digit strings,
  only ``"0"``), so training sees every length and the held-out accuracy
  measures generalisation to unseen strings, not to unseen lengths.

  Args:
    src: ``[L, B]`` digit tokens, as in `Seq2SeqBatch`.
    src_len: ``[B]`` valid lengths.

  Returns:
    ``[B]`` bool, True for the held-out strings.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> src = jnp.array([[7, 6], [9, 8], [0, 10]])    # "46" (padded) and "357"
    >>> rj.tasks.held_out(src, jnp.array([2, 3])).tolist()
    [True, False]
  """
  digits = jnp.where(jnp.arange(src.shape[0])[:, None] < src_len[None], src - DIGIT0, 0)
  return jnp.sum(digits, axis=0) % 10 == 0


def reverse_digits(
  key: jax.Array, batch: int, max_len: int, min_len: int = 1, *, only_held_out: bool = False
) -> Seq2SeqBatch:
  """Digit strings of random length in ``[min_len, max_len]`` and their reversals.

  Args:
    key: PRNG key.
    batch: B.
    max_len: the longest string.
    min_len: the shortest string.
    only_held_out: draw only strings of the held-out split (`held_out`): the
      last digit is set so the digit sum is a multiple of 10, which keeps the
      draw uniform over the held-out strings of each length.

  Returns:
    `Seq2SeqBatch`: ``src [max_len, B]``, ``tgt [max_len + 1, B]`` (the
    reversed digits, then EOS), and their lengths.

  Raises:
    ValueError: ``max_len`` is not a positive int, or ``min_len`` lies
      outside ``[1, max_len]``.

  Examples:
    >>> import jax, rnnjax as rj
    >>> b = rj.tasks.reverse_digits(jax.random.key(0), 4, 6, only_held_out=True)
    >>> b.src.shape, b.tgt.shape, bool((b.tgt_len == b.src_len + 1).all())
    ((6, 4), (7, 4), True)
    >>> bool(rj.tasks.held_out(b.src, b.src_len).all())
    True
  """
  _check_T(max_len, 1, "reverse_digits")
  if not 1 <= min_len <= max_len:
    raise ValueError(f"reverse_digits: need 1 <= min_len <= max_len, got {min_len}, {max_len}")
  kl, kd = jax.random.split(key)
  lengths = jax.random.randint(kl, (batch,), min_len, max_len + 1)
  digits = jax.random.randint(kd, (max_len, batch), 0, 10)
  t = jnp.arange(max_len)[:, None]
  valid = t < lengths[None]
  if only_held_out:
    last = t == (lengths - 1)[None]  # [max_len, B]
    others = jnp.sum(jnp.where(valid & ~last, digits, 0), axis=0)
    digits = jnp.where(last, (-others) % 10, digits)
  src = jnp.where(valid, digits + DIGIT0, 0)
  idx = jnp.where(valid, lengths[None] - 1 - t, t)  # reverse inside each length
  rev = jnp.take_along_axis(src, idx, axis=0)
  rev = jnp.where(valid, rev, 0)
  eos = (t == lengths[None]).astype(src.dtype) * 2  # EOS right after the digits
  tgt = jnp.concatenate([rev, jnp.zeros((1, batch), src.dtype)]) + jnp.concatenate(
    [eos, (lengths == max_len)[None].astype(src.dtype) * 2]
  )
  return Seq2SeqBatch(src, lengths, tgt, lengths + 1)

"""The embedded corpus and character vocabularies.

The demo's corpus needs no download: the source of Python's own standard
library, read from the running interpreter (the lecture's "Linux source code"
example, in Python). The file list is fixed and sorted; every tenth file is
held out for validation.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, NamedTuple, overload

import numpy as np

UNK = "\ufffd"
MIN_CHARS = 2_000


class Corpus(NamedTuple):
  train: str
  val: str
  source: str


class Vocab(NamedTuple):
  """Characters <-> ids; id 0 is the unknown character ``U+FFFD``."""

  chars: str

  @classmethod
  def from_text(cls, text: str) -> Vocab:
    return cls(UNK + "".join(sorted(set(text) - {UNK})))

  @property
  def size(self) -> int:
    return len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(self.chars)}
    return np.fromiter((index.get(c, 0) for c in text), np.int32, len(text))

  def decode(self, ids: np.ndarray | list[int]) -> str:
    return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def stdlib_files() -> list[Path]:
  """The top-level modules of this interpreter's standard library, sorted."""
  root = Path(sysconfig.get_paths()["stdlib"])
  return sorted(root.glob("*.py"))


def python_source_corpus(max_chars: int = 3_000_000, val_every: int = 10) -> Corpus:
  """Train/validation text from the standard library's source.

  Files are read in sorted order; file ``i`` goes to validation when
  ``i % val_every == 0``. Each split is cut at ``max_chars`` (validation at a
  tenth of it).
  """
  files = stdlib_files()
  if not files:
    raise RuntimeError("no standard-library sources found; pass --text PATH")
  train, val = [], []
  n_train = n_val = 0
  for i, path in enumerate(files):
    text = path.read_text(encoding="utf-8", errors="replace")
    if i % val_every == 0:
      if n_val < max_chars // 10:
        val.append(text)
        n_val += len(text)
    elif n_train < max_chars:
      train.append(text)
      n_train += len(text)
  return Corpus(
    "".join(train)[:max_chars],
    "".join(val)[: max_chars // 10],
    f"python {sys.version_info.major}.{sys.version_info.minor} stdlib",  # no machine path
  )


def text_corpus(path: str | os.PathLike[str], val_fraction: float = 0.1) -> Corpus:
  """A user's UTF-8 text file, split at the end into train and validation."""
  path = Path(path)
  if not path.exists():
    raise ValueError(f"--text {path}: no such file")
  if not path.is_file():
    raise ValueError(f"--text {path}: not a regular file")
  data = path.read_bytes()
  if not data:
    raise ValueError(f"--text {path}: the file is empty")
  if b"\x00" in data[:65536]:
    raise ValueError(f"--text {path}: looks like a binary file (NUL bytes); pass UTF-8 text")
  try:
    text = data.decode("utf-8")
  except UnicodeDecodeError as e:
    raise ValueError(f"--text {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  if len(text) < MIN_CHARS:
    raise ValueError(
      f"--text {path}: {len(text)} characters is too short; need at least "
      f"{MIN_CHARS} for training and validation windows"
    )
  cut = int(len(text) * (1 - val_fraction))
  return Corpus(text[:cut], text[cut:], str(path))


class Windows:
  """``window(w) -> (inputs [T, B], targets [T, B])`` for ``w`` in ``range(count)``."""

  def __init__(self, streams: np.ndarray, seq_len: int) -> None:
    self.streams = streams
    self.seq_len = seq_len
    self.count = (len(streams) - 1) // seq_len

  def __call__(self, w: int) -> tuple[np.ndarray, np.ndarray]:
    s = w * self.seq_len
    return self.streams[s : s + self.seq_len], self.streams[s + 1 : s + self.seq_len + 1]


@overload
def stream_batches(
  ids: np.ndarray, batch: int, seq_len: int, forever: Literal[False]
) -> Windows: ...


@overload
def stream_batches(
  ids: np.ndarray, batch: int, seq_len: int, forever: Literal[True] = ...
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]: ...


def stream_batches(
  ids: np.ndarray, batch: int, seq_len: int, forever: bool = True
) -> Windows | Iterator[tuple[int, np.ndarray, np.ndarray]]:
  """``batch`` parallel streams over ``ids`` cut into consecutive windows, for
  truncated BPTT with the carry passed from one window to the next.

  With ``forever=False`` returns ``window(w) -> (inputs [T, B], targets [T, B])``
  (with ``window.count`` windows), so a run can resume at any data position;
  with ``forever=True`` a generator of ``(w, inputs, targets)`` that cycles.
  """
  n = (len(ids) - 1) // batch
  if n < seq_len:
    raise ValueError(
      f"text of {len(ids)} characters is too short for batch {batch} x "
      f"seq_len {seq_len}; lower --batch or --seq-len"
    )
  streams = np.stack([ids[b * n : (b + 1) * n + 1] for b in range(batch)], axis=1)  # [n+1, B]
  window = Windows(streams, seq_len)
  if not forever:
    return window

  def cycle() -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    while True:
      for w in range(window.count):
        yield (w, *window(w))

  return cycle()

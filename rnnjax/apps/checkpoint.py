"""Checkpoints: params, optimizer state, data position and RNG, in one file.

Written atomically (temporary file, fsync, rename) with flax's msgpack
serialization, never pickle. The file is an envelope
``{format, meta (JSON), sha256, state (msgpack bytes)}``: a truncated or
bit-flipped file fails its checksum, and a file from another model fails the
structure check; both raise a `CheckpointError` that names the file and what
differs, never silently starting from scratch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import jax
import msgpack
import numpy as np
from flax import serialization

from rnnjax.apps.io import StrPath, atomic_write_bytes

FORMAT = "rnnjax-checkpoint-v1"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: corrupted, or not matching the model."""


def _to_host(tree: Any) -> Any:
  """Typed PRNG keys become their uint32 key data; arrays become NumPy."""

  def conv(x: Any) -> Any:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
      return np.asarray(jax.random.key_data(x))
    return np.asarray(x) if isinstance(x, (jax.Array, np.ndarray)) else x

  return jax.tree.map(conv, tree)


def save(path: StrPath, state: Any, meta: dict[str, Any] | None = None) -> Path:
  """Write ``state`` (any pytree of arrays, ints, floats) and ``meta`` (JSON) to ``path``."""
  payload = serialization.to_bytes(_to_host(state))
  envelope = {
    "format": FORMAT,
    "meta": json.dumps(meta or {}, sort_keys=True),
    "sha256": hashlib.sha256(payload).hexdigest(),
    "state": payload,
  }
  return atomic_write_bytes(path, msgpack.packb(envelope, use_bin_type=True))


def read_meta(path: StrPath) -> dict[str, Any]:
  """The JSON metadata of a checkpoint, after checking it is intact."""
  return json.loads(_read_envelope(Path(path))["meta"])


def _read_envelope(path: Path) -> dict[str, Any]:
  if not path.exists():
    raise CheckpointError(f"checkpoint {path}: no such file")
  raw = path.read_bytes()
  try:
    env = msgpack.unpackb(raw, raw=False)
  except Exception as e:  # msgpack raises several types for damaged data
    raise CheckpointError(f"checkpoint {path} is corrupted (not a msgpack envelope: {e})") from None
  if not isinstance(env, dict) or env.get("format") != FORMAT:
    raise CheckpointError(
      f"checkpoint {path} is not an rnnjax checkpoint (format "
      f"{env.get('format') if isinstance(env, dict) else type(env).__name__!r}, "
      f"expected {FORMAT!r})"
    )
  if hashlib.sha256(env["state"]).hexdigest() != env["sha256"]:
    raise CheckpointError(f"checkpoint {path} is corrupted: its sha256 does not match its contents")
  return env


def _describe_mismatch(expected: Any, got: Any, prefix: str = "") -> list[str]:
  out = []
  if isinstance(expected, dict) and isinstance(got, dict):
    for k in sorted(set(expected) | set(got), key=str):
      where = f"{prefix}/{k}"
      if k not in got:
        out.append(f"{where} missing from the file")
      elif k not in expected:
        out.append(f"{where} in the file but not in the model")
      else:
        out += _describe_mismatch(expected[k], got[k], where)
    return out
  e, g = np.asarray(expected), np.asarray(got)
  if e.shape != g.shape or e.dtype != g.dtype:
    out.append(
      f"{prefix or '/'}: file has {g.dtype}{list(g.shape)}, model expects {e.dtype}{list(e.shape)}"
    )
  return out


def load(path: StrPath, template: Any) -> tuple[Any, dict[str, Any]]:
  """Read a checkpoint into the structure of ``template`` (the state it was
  saved from, freshly initialised). Returns ``(state, meta)``."""
  path = Path(path)
  env = _read_envelope(path)
  try:
    got = serialization.msgpack_restore(env["state"])
  except Exception as e:
    raise CheckpointError(f"checkpoint {path} is corrupted ({e})") from None
  host_template = _to_host(template)
  expected = serialization.to_state_dict(host_template)
  problems = _describe_mismatch(expected, got)
  if problems:
    shown = "; ".join(problems[:6]) + (
      f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
    )
    raise CheckpointError(f"checkpoint {path} does not match the model: {shown}")
  restored = serialization.from_state_dict(host_template, got)

  def back(t: Any, r: Any) -> Any:  # typed keys back from key data; arrays back to jax
    if isinstance(t, jax.Array) and jax.dtypes.issubdtype(t.dtype, jax.dtypes.prng_key):
      return jax.random.wrap_key_data(jax.numpy.asarray(r))
    return jax.numpy.asarray(r) if isinstance(t, (jax.Array, np.ndarray)) else r

  return jax.tree.map(back, template, restored), json.loads(env["meta"])

"""Files the library writes: atomically (temporary file, fsync, rename), so a
crash leaves either the old file or the new one, never a torn one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_bytes(path, data: bytes) -> Path:
  """Write ``data`` to ``path`` atomically; parent folders are created."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise
  return path


def atomic_write_text(path, text: str) -> Path:
  return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path, obj) -> Path:
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

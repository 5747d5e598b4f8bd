"""Files the library writes: atomically (temporary file, fsync, rename), so a
crash leaves either the old file or the new one, never a torn one.

The files get ordinary permissions, ``0o666`` less the process umask (``0o644``
under the usual umask ``022``), as ``open(path, "w")`` would give them; not the
``0o600`` of `tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

StrPath = str | os.PathLike[str]

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)


def _create_temp(path: Path) -> tuple[int, Path]:
  """A new, empty file beside ``path``, created with mode ``0o666`` (the kernel
  applies the umask); returns its descriptor and path."""
  for _ in range(100):
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
      return os.open(tmp, _FLAGS, 0o666), tmp
    except FileExistsError:
      continue
  raise FileExistsError(f"could not create a temporary file beside {path}")


def atomic_write_bytes(path: StrPath, data: bytes) -> Path:
  """Write ``data`` to ``path`` atomically; parent folders are created.

  The bytes go to a temporary file in the same folder, are flushed and
  fsynced, and the file is renamed over ``path`` (`os.replace`). Its mode is
  ``0o666 & ~umask``.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = _create_temp(path)
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


def atomic_write_text(path: StrPath, text: str) -> Path:
  """Write ``text`` as UTF-8 to ``path`` atomically (see `atomic_write_bytes`)."""
  return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: StrPath, obj: Any) -> Path:
  """Write ``obj`` as indented, key-sorted JSON to ``path`` atomically."""
  return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")

"""Files the library writes: atomically (temporary file, fsync, rename), so a
crash leaves either the old file or the new one, never a torn one; and the
lock that holds a run folder while a run writes to it (`hold_folder`).

The files get ordinary permissions, ``0o666`` less the process umask (``0o644``
under the usual umask ``022``), as ``open(path, "w")`` would give them; not the
``0o600`` of `tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
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


LOCK_FILE = ".rnnjax-lock"
"""The lock file of a run folder (`hold_folder`)."""


class FolderInUseError(RuntimeError):
  """A run folder held by another process (`hold_folder`)."""


_held: dict[Path, list[Any]] = {}  # folder -> [open lock file, depth], this process's
_held_lock = threading.Lock()


@contextlib.contextmanager
def hold_folder(folder: StrPath, what: str = "run") -> Iterator[Path]:
  """Hold ``folder`` (created if missing) for this process while the block runs.

  The hold is an exclusive `fcntl.flock` on ``folder/.rnnjax-lock``, which
  holds this process's PID and host. The operating system releases it when
  the process ends, however it ends, so a lock left by a killed process
  (``kill -9``) is taken over by the next one; the file itself stays. Within
  one process the hold is re-entrant. A release empties the file, so a file
  that names a holder when the lock is taken was left by a killed process: a
  note on stderr says so. Where the platform has no ``flock``
  (Windows) the folder is not held.

  Args:
    folder: the run folder.
    what: what holds it, for the error message (``"run"``).

  Yields:
    The folder.

  Raises:
    FolderInUseError: another process holds ``folder``; the message names
      its PID and host.
    OSError: ``folder`` cannot be created or written.

  >>> import tempfile
  >>> with tempfile.TemporaryDirectory() as d, hold_folder(d) as held:
  ...   (held / LOCK_FILE).read_text().split()[0] == str(os.getpid())
  True
  """
  path = Path(folder).absolute()
  with _held_lock:
    entry = _held.get(path)
    if entry is not None:
      entry[1] += 1
  if entry is None:
    entry = [_acquire(path, what), 1]
    with _held_lock:
      _held[path] = entry
  try:
    yield Path(folder)
  finally:
    with _held_lock:
      entry[1] -= 1
      last = entry[1] == 0
      if last:
        del _held[path]
    if last:
      _release(entry[0])


def _acquire(path: Path, what: str) -> Any:
  try:
    import fcntl
  except ImportError:  # Windows: no flock
    return open(os.devnull, "a")  # a stand-in to close
  path.mkdir(parents=True, exist_ok=True)
  f = open(path / LOCK_FILE, "a+")  # noqa: SIM115  # held open as long as the lock
  try:
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().split()
    f.close()
    pid, host = ([*holder, "?", "?"])[:2]
    raise FolderInUseError(
      f"{path} is in use by another {what}: process {pid} on {host} holds its lock "
      f"({path / LOCK_FILE}); wait for it to end, or write to another folder"
    ) from None
  except BaseException:
    f.close()
    raise
  f.seek(0)
  left = f.read().split()
  if left:  # a holder that ended without releasing: killed
    print(
      f"note: took over the lock of {path}, left by process {left[0]} on "
      f"{([*left, '?'])[1]}, which ended without releasing it",
      file=sys.stderr,
    )
  f.seek(0)
  f.truncate()
  f.write(f"{os.getpid()} {socket.gethostname()}\n")
  f.flush()
  return f


def _release(f: Any) -> None:
  """Empty the lock file (a released lock names no holder), then close it,
  which releases the lock."""
  with contextlib.suppress(OSError, ValueError):
    f.seek(0)
    f.truncate()
    f.flush()
  f.close()

"""Files a run writes: atomic, and with the permissions the umask asks for."""

import os
import stat

import numpy as np
import pytest

from rnnjax.apps import checkpoint, io

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX permissions and umask")


@pytest.fixture
def set_umask():
  """Set the process umask for one test; the old one comes back after it."""
  old = os.umask(0o022)
  os.umask(old)
  yield os.umask
  os.umask(old)


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_written_files_get_ordinary_permissions_under_the_umask(tmp_path, set_umask, mask):
  set_umask(mask)
  existing = tmp_path / "old.json"
  existing.write_text("{}")
  os.chmod(existing, 0o600)
  paths = [
    io.atomic_write_bytes(tmp_path / "a.bin", b"\x00\x01"),
    io.atomic_write_text(tmp_path / "new" / "folder" / "b.txt", "héllo"),
    io.write_json(existing, {"k": [1, 2]}),  # replaced: the new file's mode
  ]
  with checkpoint.Checkpoints(tmp_path / "run") as saver:  # Orbax's files and folders too
    assert saver.save(3, {"w": np.arange(3.0)}, {"run": 1}, force=True)
  written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
  assert len(written) > 5
  for path in paths + written:
    assert _mode(path) == 0o666 & ~mask, (path, oct(_mode(path)))
  for folder in (p for p in (tmp_path / "run").rglob("*") if p.is_dir()):
    assert _mode(folder) == 0o777 & ~mask, (folder, oct(_mode(folder)))
  assert paths[0].read_bytes() == b"\x00\x01"
  assert paths[1].read_text(encoding="utf-8") == "héllo"
  assert paths[2].read_text() == '{\n  "k": [\n    1,\n    2\n  ]\n}\n'
  assert checkpoint.read_meta(tmp_path / "run") == {"run": 1}
  assert sorted(p.name for p in tmp_path.glob("*") if p.is_file()) == ["a.bin", "old.json"]


def test_write_is_atomic_fsynced_and_cleans_up(tmp_path, monkeypatch):
  path = io.atomic_write_text(tmp_path / "f.txt", "old")
  synced = []
  real_fsync = os.fsync

  def fsync(fd):
    synced.append(fd)
    real_fsync(fd)

  monkeypatch.setattr(os, "fsync", fsync)
  io.atomic_write_text(path, "new")
  assert path.read_text() == "new" and len(synced) == 1

  def failing_fsync(fd):
    raise OSError("disk full")

  monkeypatch.setattr(os, "fsync", failing_fsync)
  with pytest.raises(OSError, match="disk full"):
    io.atomic_write_text(path, "torn")
  assert path.read_text() == "new"  # the old file, untouched
  assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]  # no temporary file left

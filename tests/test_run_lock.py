"""A run folder is held while a run writes to it: a second run into the same
--out is refused at once, naming the holder's PID; the lock of a killed run
(kill -9) is taken over. The lock is fcntl.flock on OUT/.rnnjax-lock, which
the operating system releases when its process ends. (Two processes of one
jax.distributed run share a folder through process 0's lock: the two-process
run in tests/test_multidevice.py trains into one.)"""

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rnnjax.apps import cli, io

ROOT = Path(__file__).resolve().parents[1]


def _hold_elsewhere(folder, holder="4242 otherhost\n"):
  """The lock of ``folder`` taken through another open file, as another
  process's would be (flock locks belong to open files)."""
  folder.mkdir(parents=True, exist_ok=True)
  f = open(folder / io.LOCK_FILE, "a+")  # noqa: SIM115
  fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  f.seek(0)
  f.truncate()
  f.write(holder)
  f.flush()
  return f


@pytest.mark.parametrize("command", ["train", "demo"])
def test_a_second_run_into_a_held_folder_is_refused_at_once(command, tmp_path, capsys):
  out = tmp_path / "run"
  text = tmp_path / "corpus.txt"
  text.write_text("for i in x:\n    y += i\n" * 200)
  held = _hold_elsewhere(out)
  t0 = time.perf_counter()
  budget = "--max-steps" if command == "demo" else "--steps"
  with pytest.raises(SystemExit) as e:
    cli.main([command, "--text", str(text), "--out", str(out), budget, "1"])
  assert time.perf_counter() - t0 < 5  # refused before any training
  assert e.value.code == 2
  assert capsys.readouterr().err == (
    f"rnnjax {command}: error: {out} is in use by another run: process 4242 on otherhost holds "
    f"its lock ({out / io.LOCK_FILE}); wait for it to end, or write to another folder\n"
  )
  assert sorted(p.name for p in out.iterdir()) == [io.LOCK_FILE]  # nothing written
  held.close()


def test_the_hold_is_reentrant_and_released(tmp_path, capsys):
  with io.hold_folder(tmp_path) as a, io.hold_folder(tmp_path) as b:
    assert a == b == tmp_path
    assert (tmp_path / io.LOCK_FILE).read_text().split()[0] == str(os.getpid())
    with pytest.raises(BlockingIOError), open(tmp_path / io.LOCK_FILE) as other:
      fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
  assert (tmp_path / io.LOCK_FILE).read_text() == ""  # released: names no holder
  io._release(_hold_elsewhere(tmp_path))  # another run's, released as a run releases it
  with io.hold_folder(tmp_path):
    pass
  assert "took over" not in capsys.readouterr().err


def test_a_killed_runs_lock_is_taken_over(tmp_path, capsys):
  """A real `rnnjax train` holds its --out: a second run is refused naming its
  PID; after kill -9 the next one takes the lock over and says whose it was."""
  out = tmp_path / "run"
  text = tmp_path / "corpus.txt"
  text.write_text("for i in x:\n    y += i\n" * 200)
  proc = subprocess.Popen(
    [
      sys.executable,
      "-m",
      "rnnjax",
      "train",
      "--text",
      str(text),
      "--out",
      str(out),
      "--steps",
      "100000",
      "--hidden",
      "8",
      "--batch",
      "2",
      "--seq-len",
      "8",
      "--no-progress",
    ],
    env=dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu"),
    stdout=subprocess.DEVNULL,
    stderr=subprocess.PIPE,
  )
  try:
    deadline = time.time() + 120
    lock = out / io.LOCK_FILE
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
      assert proc.poll() is None, proc.stderr.read().decode()
      time.sleep(0.05)
    assert lock.read_text().split()[0] == str(proc.pid)
    with pytest.raises(SystemExit) as e:
      cli.main(["train", "--text", str(text), "--out", str(out), "--steps", "1", "--seed", "1"])
    assert e.value.code == 2
    assert f"is in use by another run: process {proc.pid} on " in capsys.readouterr().err
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  assert lock.read_text().split()[0] == str(proc.pid)  # the killed run's
  with io.hold_folder(out):
    assert lock.read_text().split()[0] == str(os.getpid())
  assert f"took over the lock of {out}, left by process {proc.pid} on " in capsys.readouterr().err

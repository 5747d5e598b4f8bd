"""Fault injection: each file of a saved step flipped, truncated or deleted,
then `rnnjax generate` and `rnnjax train --resume` run through the CLI's
`main`. Each command either fails with one line that names the step folder and
the file (or the item, ``state/``, with the array) and what is wrong, or, where
the file is not needed (a commit marker, Orbax's bookkeeping), gives results
bit-identical to the undamaged run's. Output that differs without an error
fails the test.

The files of a step are enumerated from a real run (`test_roles_cover_every_file_of_a_step`
fails when Orbax writes a file no role names). The suite runs a representative
subset, one case of each kind of file and outcome; ``RNNJAX_FUZZ=1`` runs the
whole grid (every file x flip, truncate, delete x both commands).
"""

import contextlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from rnnjax.apps import checkpoint, cli

FULL = os.environ.get("RNNJAX_FUZZ") == "1"
SAVED, LAST = 2, 4  # the run keeps the checkpoints of steps 2 and 4; step 4 is damaged

TINY = ["--hidden", "8", "--batch", "2", "--seq-len", "8", "--log-every", "1", "--no-progress"]
SAVE = ["--checkpoint-every", "2", "--keep-checkpoints", "2"]

# A role names files of a step whatever Orbax calls them: a path; 'FOLDER/*',
# every file of a folder (Orbax names data files by hash, and writes more or
# fewer of them as its writes overlap); 'FOLDER/largest', its largest file.
FIXED = [
  "_CHECKPOINT_METADATA",
  "commit_success.txt",
  "meta/commit_success.txt",
  "meta/metadata",
  "sha256/commit_success.txt",
  "sha256/metadata",
  "state/_METADATA",
  "state/_sharding",
  "state/array_metadatas/process_0",
  "state/commit_success.txt",
  "state/manifest.ocdbt",
  "state/ocdbt.process_0/manifest.ocdbt",
]
ROLES = [*FIXED, "state/d/*", "state/ocdbt.process_0/d/*"]
DAMAGES = ["flip", "truncate", "delete"]
COMMANDS = ["generate", "resume"]

# The suite's subset: each kind of file (the run's JSON, the record, Orbax's
# metadata, the OCDBT tree and data, bookkeeping) with a damage that matters.
SUBSET = [
  ("meta/metadata", "flip"),  # issue 20: the vocabulary's 'a' became '`' silently
  ("sha256/metadata", "truncate"),
  ("state/_METADATA", "delete"),
  ("state/d/*", "flip"),
  ("state/ocdbt.process_0/d/largest", "flip"),  # the arrays' bytes: their sha256
  ("state/manifest.ocdbt", "truncate"),
  ("commit_success.txt", "delete"),  # harmless: identical results
  ("_CHECKPOINT_METADATA", "flip"),
]
CASES = [(r, d) for r in ROLES for d in DAMAGES] if FULL else SUBSET


def _role_files(step_dir: Path, role: str) -> list[Path]:
  folder, _, which = role.rpartition("/")
  if which not in ("*", "largest"):
    return [step_dir / role]
  files = sorted((step_dir / folder).iterdir(), key=lambda p: (p.stat().st_size, p.name))
  return files if which == "*" else files[-1:]


def _damage(path: Path, how: str) -> None:
  data = bytearray(path.read_bytes())
  if how == "flip":
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
  elif how == "truncate":
    path.write_bytes(bytes(data[: len(data) // 2]))
  else:
    path.unlink()


def _call(argv):
  """``rnnjax argv`` in this process: (exit status, stdout, stderr)."""
  out, err = io.StringIO(), io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      code = cli.main(argv)
    except SystemExit as e:
      code = e.code
  return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def text(tmp_path_factory):
  rng = np.random.default_rng(0)
  words = ["for i in x:\n", "    y += i\n", "print(y)\n", "# a note\n"]
  path = tmp_path_factory.mktemp("text") / "corpus.txt"
  path.write_text("".join(words[i] for i in rng.integers(0, 4, 300)), encoding="utf-8")
  return path


@pytest.fixture(scope="module")
def saved(text, tmp_path_factory):
  """A run of 4 steps with the checkpoints of steps 2 and 4."""
  out = tmp_path_factory.mktemp("saved") / "run"
  code, _, err = _call(
    ["train", "--text", str(text), "--steps", str(LAST), "--out", str(out), *TINY, *SAVE]
  )
  assert code == 0, err
  assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [SAVED, LAST]
  return out


def _run(command, run, text):
  """The command's exit status, its stderr, and its results: what it prints
  and, for a resumed run, what it writes (less the wall-clock times)."""
  if command == "generate":
    code, out, err = _call(["generate", "--run", str(run), "--chars", "12", "--seed", "1"])
    return code, err, out
  argv = ["train", "--text", str(text), "--steps", str(LAST + 1), "--out", str(run), "--resume"]
  code, out, err = _call(argv + TINY + SAVE)
  if code != 0:
    return code, err, None
  summary = json.loads((run / "summary.json").read_text())
  summary.pop("train_seconds")
  rows = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
  rows = [{k: v for k, v in r.items() if k != "seconds"} for r in rows]
  return code, err, (out.replace(str(run), "RUN"), summary, rows)


@pytest.fixture(scope="module")
def baseline(saved, text, tmp_path_factory):
  """Each command's results on an undamaged copy of the run."""
  results = {}
  for command in COMMANDS:
    run = shutil.copytree(saved, tmp_path_factory.mktemp("clean") / "run")
    code, err, results[command] = _run(command, run, text)
    assert code == 0, err
  return results


def test_roles_cover_every_file_of_a_step(saved):
  step_dir = saved / "checkpoints" / str(LAST)
  files = {p for p in step_dir.rglob("*") if p.is_file()}
  named = {f for r in ROLES for f in _role_files(step_dir, r)}
  assert named == files, (
    f"files no role names: {sorted(str(p.relative_to(step_dir)) for p in files - named)}; "
    f"roles naming no file: {sorted(str(p.relative_to(step_dir)) for p in named - files)}"
  )


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(("role", "how"), CASES)
def test_a_damaged_file_is_an_error_or_changes_nothing(
  role, how, command, saved, text, baseline, tmp_path
):
  n = len(_role_files(saved / "checkpoints" / str(LAST), role))
  for i in range(n):
    run = shutil.copytree(saved, tmp_path / f"run{i}")
    step_dir = run / "checkpoints" / str(LAST)
    victim = _role_files(step_dir, role)[i]
    _damage(victim, how)
    _check(command, run, text, step_dir, victim, baseline)


def _check(command, run, text, step_dir, victim, baseline):
  named = str(victim.relative_to(step_dir))
  code, err, results = _run(command, run, text)
  if code == 0:
    assert results == baseline[command], f"{named}: other results without an error"
    return
  name = "generate" if command == "generate" else "train"
  lines = err.strip().splitlines()
  assert code == 2 and len(lines) == 1, err
  head = f"rnnjax {name}: error: checkpoint {step_dir} is corrupted: "
  assert lines[0].startswith(head), lines[0]
  what = lines[0][len(head) :]
  # the file, or the item whose files Orbax read together (tensorstore names the array)
  assert named in what or what.startswith(("state/", "the bytes of /")), what
  assert f"the older step {SAVED} is intact" in what
  hint = (
    f"read one with --step {SAVED}"
    if command == "generate"
    else f"to resume from step {SAVED}, move {step_dir} out of {step_dir.parent}"
  )
  assert hint in what


def test_a_flipped_vocabulary_byte_is_named_not_called_another_run(saved, text, tmp_path, capsys):
  """Issue 20: one byte of the vocabulary in meta/metadata ('a' -> '`') gave
  text with every 'a' a backtick, and --resume called it "a different run"."""
  run = shutil.copytree(saved, tmp_path / "run")
  meta = run / "checkpoints" / str(LAST) / "meta" / "metadata"
  data = meta.read_bytes()
  vocab = json.loads(data)["vocab"]
  i = data.index(vocab[vocab.index("a") :].encode())
  meta.write_bytes(data[:i] + b"`" + data[i + 1 :])
  assert "`" in json.loads(meta.read_bytes())["vocab"]
  for command in COMMANDS:
    code, err, _ = _run(command, run, text)
    assert code == 2, err
    assert "different run" not in err
    assert (
      f"is corrupted: meta/metadata (the run's arguments and vocabulary) does not match the "
      f"sha256 recorded for it in sha256/metadata; the older step {SAVED} is intact"
    ) in err


def test_the_older_intact_step_is_named_and_used(saved, text, tmp_path):
  """A damaged newest step: generate names the older intact step and reads it
  with --step; --resume refuses with the hint, and once the damaged step is
  moved away it resumes from the older one, to the undamaged run's curve."""
  run = shutil.copytree(saved, tmp_path / "run")
  step_dir = run / "checkpoints" / str(LAST)
  _damage(step_dir / "sha256" / "metadata", "flip")
  older = _call(["generate", "--run", str(run), "--chars", "12", "--step", str(SAVED)])
  clean = shutil.copytree(saved, tmp_path / "clean")
  assert older == _call(["generate", "--run", str(clean), "--chars", "12", "--step", str(SAVED)])
  assert older[0] == 0 and len(older[1]) == 1 + 12 + 1  # the prime, 12 characters, a newline
  code, err, _ = _run("resume", run, text)
  assert code == 2 and "move" in err
  shutil.move(step_dir, tmp_path / "aside")
  code, err, (out, _summary, rows) = _run("resume", run, text)
  assert code == 0, err
  assert f"(resumed at step {SAVED})" in out
  shutil.move(clean / "checkpoints" / str(LAST), tmp_path / "aside-clean")
  _, _, (_, _, clean_rows) = _run("resume", clean, text)
  assert rows == clean_rows  # as the undamaged run resumed from step 2, exactly


def test_a_step_that_is_not_there_is_named(saved):
  code, _, err = _call(["generate", "--run", str(saved), "--step", "3"])
  assert code == 2
  assert err == (
    f"rnnjax generate: error: checkpoint {saved / 'checkpoints'} has no step 3: its steps are "
    f"{SAVED}, {LAST}\n"
  )


def test_the_record_covers_meta_step_and_itself(tmp_path):
  """The sha256 record of a step: every leaf, the meta's canonical JSON, the
  step, and its own digest; a record moved to another step is refused."""
  state = {"w": np.arange(4.0)}
  with checkpoint.Checkpoints(tmp_path) as saver:
    saver.save(1, state, {"vocab": "ab"}, force=True)
    saver.save(2, state, {"vocab": "ab"}, force=True)
  record = json.loads((tmp_path / "checkpoints" / "1" / "sha256" / "metadata").read_text())
  assert set(record) == {"format", "step", "meta", "leaves", "self"}
  assert record["step"] == 1 and set(record["leaves"]) == {"/w"}
  shutil.copy(
    tmp_path / "checkpoints" / "1" / "sha256" / "metadata",
    tmp_path / "checkpoints" / "2" / "sha256" / "metadata",
  )
  with pytest.raises(
    checkpoint.DamagedCheckpointError,
    match="sha256/metadata records step 1, but the folder is step 2; the older step 1 is intact",
  ):
    checkpoint.read_meta(tmp_path)
  assert checkpoint.intact_steps(tmp_path) == [1]


def test_a_failed_background_save_is_one_error(tmp_path, monkeypatch):
  """Orbax writes in the background; a write that fails (a full disk, a folder
  made read-only) is raised when the run waits for it, naming the folder."""
  saver = checkpoint.Checkpoints(tmp_path)

  def fail():
    raise OSError(28, "No space left on device")

  monkeypatch.setattr(saver._manager, "wait_until_finished", fail)
  with pytest.raises(
    checkpoint.CheckpointError,
    match=rf"^saving a checkpoint in {tmp_path / 'checkpoints'} failed: OSError: \[Errno 28\] No "
    "space left on device$",
  ):
    saver.close()


def test_orbax_leftovers_are_dropped_and_other_reports_kept(monkeypatch):
  """After a failed read, tensorstore completes reads into Orbax's closed event
  loop, and Orbax's unfinished read coroutines are collected: Python reported
  both (``RuntimeError: Event loop is closed``, ``Exception ignored in
  coroutine``) after the error, in a race. The hook drops exactly these."""
  seen = []
  monkeypatch.setattr(sys, "unraisablehook", seen.append)
  checkpoint._drop_orbax_leftovers()
  checkpoint._drop_orbax_leftovers()  # installed once

  async def read():  # a coroutine of Orbax's, as the collector finds it
    pass

  orbax_read = read()
  code = SimpleNamespace(co_filename="site-packages/orbax/checkpoint/_src/serialization.py")
  closed = SimpleNamespace(
    exc_value=RuntimeError("Event loop is closed"), object=None, err_msg=None
  )
  leftover = SimpleNamespace(
    exc_value=GeneratorExit(), object=SimpleNamespace(cr_code=code), err_msg=None
  )
  ours = SimpleNamespace(exc_value=RuntimeError("Event loop is closed"), object=orbax_read)
  other = SimpleNamespace(exc_value=ValueError("x"), object=None, err_msg=None)
  for report in (closed, leftover, ours, other):
    sys.unraisablehook(report)
  assert seen == [ours, other]
  orbax_read.close()


def test_a_record_of_the_first_orbax_format_is_read_with_a_warning(tmp_path, monkeypatch):
  """Checkpoints written before the record covered the meta (leaf digests
  only) still restore, their arrays checked, with a warning about the meta."""
  state = {"w": np.arange(3.0)}
  with monkeypatch.context() as m:
    m.setattr(checkpoint, "_record", lambda step, arrays, meta: checkpoint._digests(arrays))
    with checkpoint.Checkpoints(tmp_path) as saver:
      saver.save(1, state, {"vocab": "ab"}, force=True)
  with pytest.warns(UserWarning, match="record covers the arrays only"):
    got = checkpoint.restore(tmp_path, {"w": np.zeros(3)})
  assert got.meta == {"vocab": "ab"} and got.state["w"].tolist() == [0.0, 1.0, 2.0]

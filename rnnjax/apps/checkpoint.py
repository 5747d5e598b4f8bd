"""Checkpoints of training runs, on Orbax: params, optimizer state, TBPTT
carries and RNG, with the run's arguments beside them.

A run folder keeps its checkpoints in ``OUT/checkpoints/<step>/``, written by
an `orbax.checkpoint.CheckpointManager` (`Checkpoints`) with three items:

* ``state``: the arrays, through `orbax.checkpoint.args.StandardSave`
  (tensorstore files; each process writes the shards it holds, so sharded
  arrays are saved where they live), restored onto the shardings of an
  abstract target (`restore`);
* ``meta``: the run's arguments and vocabulary as JSON
  (`orbax.checkpoint.args.JsonSave`);
* ``sha256``: JSON, the step's record: the sha256 of each leaf's bytes, of the
  ``meta`` item's canonical JSON and the step number, and a sha256 of the
  record itself, so that a damaged record is told from a damaged item.

What the runs rely on:

* **Atomic saves.** Orbax writes a step into a temporary folder and renames
  it once every item is complete; a folder left by a save that was killed is
  never listed as a step and is removed when the run is opened again.
* **Asynchronous saves.** The manager copies the arrays to the host and
  writes them in a background thread while training goes on;
  `Checkpoints.close` waits for the last write before the run returns.
* **Damage and mismatches are errors.** Orbax checks structure and shapes
  but not contents: a flipped byte in a tensorstore data file restores
  silently with other numbers, and a stored dtype is cast to the target's
  without a word (both measured with orbax-checkpoint 0.12). So `restore`
  compares every leaf's dtype and shape with the model's before reading, and
  every leaf's bytes with its saved sha256 after; either failure raises a
  `CheckpointError` naming the step folder and the leaf. The ``meta`` item
  (the vocabulary, the run's arguments) is checked against the record too,
  by `read_meta` as by `restore`, so everything a run needs to reproduce its
  output (arguments, vocabulary, data position = the step, RNG key, arrays)
  is under a checksum. A file of a step that Orbax cannot read, or whose
  contents differ from the record, raises `DamagedCheckpointError`: it names
  the step folder, the file where one is known, what is wrong, and the older
  steps of the run that are intact (`intact_steps`).
* **Errors once.** A failed read leaves Orbax's other read coroutines
  unfinished, and tensorstore then completes reads into Orbax's closed event
  loop; Python would report both after the error (``Exception ignored in
  coroutine``, ``RuntimeError: Event loop is closed``). The coroutines are
  collected before the error is raised, and exactly these reports are
  dropped (`_drop_orbax_leftovers`); any other is passed on.
* **Records of the first Orbax format** (leaf digests only, no meta digest)
  are read with a warning that their meta is not checked.
* **No pickle.** Orbax keeps arrays in tensorstore and metadata in JSON;
  the legacy reader below reads msgpack.

The msgpack format of rnnjax 0.1 (one ``OUT/checkpoint.ckpt`` file: an
envelope ``{format, meta, sha256, state}``) is still read, with a
`FutureWarning`, for one release, so that existing runs can be sampled and
resumed; it is never written. The release after this one drops the reader
and names the file in a `CheckpointError`.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import re
import shutil
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import msgpack
import numpy as np
import orbax.checkpoint as ocp  # type: ignore[import-untyped]  # no py.typed marker
from flax import serialization
from jax.experimental import multihost_utils

from rnnjax.apps.io import StrPath

FOLDER = "checkpoints"
"""The Orbax checkpoints' folder inside a run folder."""
LEGACY_FILE = "checkpoint.ckpt"
"""The msgpack checkpoint of rnnjax 0.1, read for one more release."""
LEGACY_FORMAT = "rnnjax-checkpoint-v1"
RECORD_FORMAT = "rnnjax-sha256-v2"
"""The format of a step's ``sha256`` item: leaves, meta, step, and its own sha256."""
META_FILE = "meta/metadata"
RECORD_FILE = "sha256/metadata"


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: corrupted, missing, or not matching the model."""


class DamagedCheckpointError(CheckpointError):
  """A step whose files cannot be read or differ from its sha256 record.

  Attributes:
    where: the step folder.
    intact: the older steps of the run found intact (newest first), filled in
      when the damaged step was read as the newest one.
  """

  def __init__(self, where: Path, what: str) -> None:
    self.where, self.what, self.intact = where, what, list[int]()
    super().__init__(f"checkpoint {where} is corrupted: {what}")

  def with_intact(self, steps: list[int]) -> DamagedCheckpointError:
    """This error with the run's intact older ``steps`` named at its end."""
    self.intact = list(steps)
    older = (
      f"the older step{'s' if len(steps) > 1 else ''} {', '.join(map(str, steps))} "
      f"{'are' if len(steps) > 1 else 'is'} intact"
      if steps
      else "no older step is intact"
    )
    self.args = (f"checkpoint {self.where} is corrupted: {self.what}; {older}",)
    return self


class Restored(NamedTuple):
  """What `restore` returns."""

  state: Any
  meta: dict[str, Any]
  step: int


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
  """Typed PRNG keys become their uint32 key data (same sharding)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _path(keys: tuple[str, ...]) -> str:
  return "/" + "/".join(str(k) for k in keys)


def _host_value(x: Any) -> np.ndarray:
  """The whole of ``x`` on this host: its own copy when replicated, a gather
  across processes when it is split over several."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if x.is_fully_replicated:
      return np.asarray(x.addressable_data(0))
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(x)


def _digests(tree: Any) -> dict[str, str]:
  """The sha256 of each leaf's bytes, keyed by its path."""
  return {
    _path(k): hashlib.sha256(np.ascontiguousarray(_host_value(v)).tobytes()).hexdigest()
    for k, v in ocp.tree.to_flat_dict(tree).items()
  }


def _sha256_json(obj: Any) -> str:
  """The sha256 of ``obj``'s canonical JSON (sorted keys, no spaces, ASCII)."""
  text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
  return hashlib.sha256(text.encode("ascii")).hexdigest()


def _record(step: int, arrays: Any, meta: dict[str, Any]) -> dict[str, Any]:
  """A step's ``sha256`` item: every leaf's digest, the meta's, the step, and
  the sha256 of all of these (``self``)."""
  body = dict(format=RECORD_FORMAT, step=step, meta=_sha256_json(meta), leaves=_digests(arrays))
  return {**body, "self": _sha256_json(body)}


def _check_record(where: Path, step: int, record: Any) -> tuple[dict[str, str], str | None]:
  """The leaves' and the meta's digests from a step's record, after its own
  checks. A record of rnnjax 0.2's first Orbax checkpoints (leaf digests only)
  gives no meta digest."""
  if not isinstance(record, dict):
    raise DamagedCheckpointError(where, f"{RECORD_FILE} is not a JSON object")
  if "format" not in record and all(isinstance(v, str) for v in record.values()):
    return record, None  # the first Orbax format: leaves only
  body = {k: v for k, v in record.items() if k != "self"}
  if record.get("self") != _sha256_json(body):
    raise DamagedCheckpointError(
      where, f"{RECORD_FILE} (the step's sha256 record) does not match its own sha256"
    )
  if record.get("format") != RECORD_FORMAT:
    raise CheckpointError(
      f"checkpoint {where} has a sha256 record of format {record.get('format')!r}, "
      f"expected {RECORD_FORMAT!r}: written by another version of rnnjax"
    )
  if record.get("step") != step:
    raise DamagedCheckpointError(
      where, f"{RECORD_FILE} records step {record.get('step')}, but the folder is step {step}"
    )
  return record["leaves"], record["meta"]


def _check_meta(where: Path, meta: Any, digest: str | None) -> dict[str, Any]:
  if not isinstance(meta, dict):
    raise DamagedCheckpointError(where, f"{META_FILE} is not a JSON object")
  if digest is None:
    warnings.warn(
      f"checkpoint {where} was written by an earlier rnnjax whose record covers the arrays "
      "only: its arguments and vocabulary ({META_FILE}) are not checked; the next save of "
      "the run covers them",
      UserWarning,
      stacklevel=4,
    )
  elif _sha256_json(meta) != digest:
    raise DamagedCheckpointError(
      where,
      f"{META_FILE} (the run's arguments and vocabulary) does not match the sha256 recorded "
      f"for it in {RECORD_FILE}",
    )
  return meta


def _check_leaves(where: Path, state: Any, saved: dict[str, str]) -> None:
  for name, digest in _digests(state).items():
    if saved.get(name) != digest:
      raise DamagedCheckpointError(
        where,
        f"the bytes of {name} do not match the sha256 saved with them in {RECORD_FILE} "
        "(the array's data is in state/)",
      )


def _manager(directory: Path, *, every: int = 0, keep: int | None = None) -> ocp.CheckpointManager:
  policies = ocp.checkpoint_managers
  save_when: list[Any] = [policies.PreemptionCheckpointingPolicy()]  # multi-host preemption notices
  if every:
    save_when.append(policies.FixedIntervalPolicy(every))
  return ocp.CheckpointManager(
    directory,
    options=ocp.CheckpointManagerOptions(
      max_to_keep=keep,
      save_decision_policy=policies.AnySavePolicy(save_when),
      cleanup_tmp_directories=True,
      enable_async_checkpointing=True,
    ),
    item_handlers=dict(
      state=ocp.StandardCheckpointHandler(),
      meta=ocp.JsonCheckpointHandler(),
      sha256=ocp.JsonCheckpointHandler(),
    ),
  )


class Checkpoints:
  """The checkpoints a run writes into ``OUT/checkpoints``.

  Args:
    run_dir: the run folder.
    every: save at the steps that are multiples of this (Orbax's
      save-interval policy); 0 saves only when forced (the end of a run).
    keep: how many of the newest checkpoints to keep (Orbax's retention).

  Use as a context manager, or call `close`, so the last asynchronous save is
  waited for.
  """

  def __init__(self, run_dir: StrPath, *, every: int = 0, keep: int = 2) -> None:
    if keep < 1:
      raise ValueError(f"keep must be >= 1 (the newest checkpoints kept), got {keep}")
    self.directory = Path(run_dir).absolute() / FOLDER
    self._manager = _manager(self.directory, every=every, keep=keep)

  def save(self, step: int, state: Any, meta: dict[str, Any], *, force: bool = False) -> bool:
    """Start saving ``state`` (a pytree of arrays) and ``meta`` (JSON) as ``step``
    when the save interval says so, or always with ``force``; a step already
    saved is kept as it is. Returns whether a save started."""
    if step in self._manager.all_steps() or not (force or self._manager.should_save(step)):
      return False
    arrays = _keys_to_data(state)
    return self._manager.save(
      step,
      args=ocp.args.Composite(
        state=ocp.args.StandardSave(arrays),
        meta=ocp.args.JsonSave(meta),
        sha256=ocp.args.JsonSave(_record(step, arrays, meta)),
      ),
      force=True,
    )

  def close(self) -> None:
    """Wait for the last save to be complete on disk, then release the manager.

    Raises:
      CheckpointError: the background write failed (a full disk, a folder
        made read-only); the error names the folder and the cause.
    """
    try:
      self._manager.wait_until_finished()
    except Exception as e:
      with contextlib.suppress(Exception):  # closing waits again, and fails again
        self._manager.close()
      raise CheckpointError(f"saving a checkpoint in {self.directory} failed: {_cause(e)}") from e
    self._manager.close()

  def __enter__(self) -> Checkpoints:
    return self

  def __exit__(self, *exc: object) -> None:
    self.close()


def latest_step(run_dir: StrPath) -> int | None:
  """The step of the newest complete checkpoint in ``run_dir`` (Orbax or legacy), or None."""
  folder = Path(run_dir) / FOLDER
  if folder.is_dir():
    steps = ocp.utils.checkpoint_steps(folder)
    if steps:
      return max(steps)
  if (Path(run_dir) / LEGACY_FILE).exists():
    return int(_legacy_meta_and_state(Path(run_dir) / LEGACY_FILE)[1]["step"])
  return None


def remove(run_dir: StrPath) -> None:
  """Delete the checkpoints of ``run_dir`` (both formats); other files stay."""
  shutil.rmtree(Path(run_dir) / FOLDER, ignore_errors=True)
  (Path(run_dir) / LEGACY_FILE).unlink(missing_ok=True)


def _open(run_dir: Path, step: int | None) -> tuple[ocp.CheckpointManager, int, Path]:
  """The manager of ``run_dir``'s checkpoints, the step to read (the newest when
  ``step`` is None) and its folder."""
  folder = run_dir.absolute() / FOLDER
  if not folder.is_dir():
    raise CheckpointError(f"checkpoint {run_dir / FOLDER}: no such folder")
  manager = _manager(folder)
  steps = manager.all_steps()
  if step is None and not steps:
    manager.close()
    raise CheckpointError(
      f"checkpoint folder {run_dir / FOLDER} holds no complete checkpoint (a save "
      "interrupted before its first step was complete leaves none)"
    )
  if step is not None and step not in steps:
    manager.close()
    raise CheckpointError(
      f"checkpoint {run_dir / FOLDER} has no step {step}: its steps are "
      f"{', '.join(map(str, sorted(steps))) or 'none'}"
    )
  step = max(steps) if step is None else step
  return manager, step, run_dir / FOLDER / str(step)


def _innermost(e: BaseException) -> BaseException:
  while e.__cause__ is not None:
    e = e.__cause__
  return e


def _cause(e: BaseException) -> str:
  """The innermost cause's type and first line."""
  e = _innermost(e)
  lines = str(e).strip().splitlines()
  first = lines[0] if lines else ""
  return f"{type(e).__name__}: {first[:300]}{' ...' if len(first) > 300 else ''}"


def _files_named(e: BaseException, where: Path) -> list[str]:
  """The files of the step folder ``where`` that the messages of ``e`` and its
  causes name, relative to ``where``, files before folders."""
  root = str(where.absolute())
  names: list[str] = []
  seen: set[int] = set()
  x: BaseException | None = e
  while x is not None and id(x) not in seen:
    seen.add(id(x))
    text = f"{getattr(x, 'filename', '') or ''} {x}"
    for m in re.finditer(re.escape(root) + r"(?:\.orbax-checkpoint-tmp)?/([^\s'\"\\,:)]+)", text):
      if m.group(1) not in names:
        names.append(m.group(1))
    x = x.__cause__ or x.__context__
  return sorted(names, key=lambda n: n.endswith("/"))


def _damaged(where: Path, e: BaseException, item: str) -> DamagedCheckpointError:
  """A DamagedCheckpointError for a step whose ``item`` (a file, or the files
  that Orbax read together) cannot be read: the file that the messages name,
  else ``item``, with the innermost cause's first line, the step folder's
  path cut from it (tensorstore's names the array: ``Error reading
  "params.out.w/0.0" in OCDBT database ...: ZSTD_decompressStream() failed``)."""
  _drop_orbax_leftovers()
  files = _files_named(e, where)
  named = files[0] if files and not files[0].endswith("/") else item
  cause = _cause(e).replace(str(where.absolute()) + "/", "")
  return DamagedCheckpointError(where, f"{named} cannot be read ({cause})")


def _orbax_leftover(u: Any) -> bool:
  """Whether an unraisable exception is what a failed Orbax read leaves: an
  unfinished read coroutine of Orbax's collected, or tensorstore completing a
  read into Orbax's event loop after Orbax closed it (``RuntimeError: Event
  loop is closed`` from ``call_soon_threadsafe``, called from C)."""
  if isinstance(u.exc_value, RuntimeError) and str(u.exc_value) == "Event loop is closed":
    return u.object is None
  code = getattr(u.object, "cr_code", None)
  return code is not None and "orbax" in code.co_filename


_failed_reads = 0  # how many Orbax reads failed in this process


def _drop_orbax_leftovers() -> None:
  """Install (once) an unraisable-exception hook that drops `_orbax_leftover`
  reports and passes every other one to the hook it replaces. Installed on
  the first failed read: tensorstore's late callbacks arrive after the error
  has been raised, so a hook for the duration of the read would miss them."""
  global _failed_reads
  _failed_reads += 1
  if getattr(sys.unraisablehook, "_drops_orbax_leftovers", False):
    return
  previous = sys.unraisablehook

  def hook(u: Any) -> None:
    if not _orbax_leftover(u):
      previous(u)

  hook._drops_orbax_leftovers = True  # type: ignore[attr-defined]
  sys.unraisablehook = hook


@contextlib.contextmanager
def _collect_orbax_leftovers() -> Iterator[None]:
  """A block of Orbax reads that, when one fails, reports the failure once:
  by the error the caller raises, not also by Python's ``Exception ignored``
  reports of what the read left unfinished (`_drop_orbax_leftovers`), which
  are collected here."""
  failed_before = _failed_reads
  try:
    yield
  finally:
    if _failed_reads != failed_before:  # this block's read failed
      with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "coroutine .* was never awaited", RuntimeWarning)
        gc.collect()


def _read_json_items(
  manager: ocp.CheckpointManager, step: int, where: Path
) -> tuple[dict[str, Any], str | None, dict[str, str]]:
  """The checked meta of ``step``, its digest, and the leaves' digests of its record."""
  items = {}
  for name, path in (("sha256", RECORD_FILE), ("meta", META_FILE)):
    failed = None
    with _collect_orbax_leftovers():
      try:
        got = manager.restore(step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()}))
        items[name] = got[name]
      except Exception as e:  # a damaged or missing JSON file
        failed = _damaged(where, e, path)
    if failed is not None:
      raise failed
  leaves, meta_digest = _check_record(where, step, items["sha256"])
  return _check_meta(where, items["meta"], meta_digest), meta_digest, leaves


def read_meta(run_dir: StrPath, step: int | None = None) -> dict[str, Any]:
  """The run arguments saved with the newest checkpoint of ``run_dir`` (or ``step``'s).

  Raises:
    CheckpointError: no such folder or step.
    DamagedCheckpointError: a file that cannot be read, or arguments that
      differ from the sha256 recorded with them; when the newest step was
      asked for, the error names the older intact steps.
  """
  run_dir = Path(run_dir)
  if not (run_dir / FOLDER).exists() and (run_dir / LEGACY_FILE).exists():
    return _legacy_meta_and_state(run_dir / LEGACY_FILE)[0]
  newest = step is None
  manager, step, where = _open(run_dir, step)
  try:
    return _read_json_items(manager, step, where)[0]
  except DamagedCheckpointError as e:
    raise (e.with_intact(intact_steps(run_dir, below=step)) if newest else e) from None
  finally:
    manager.close()


def intact_steps(run_dir: StrPath, below: int | None = None) -> list[int]:
  """The steps of ``run_dir`` (below ``below``) whose every file reads and
  matches its sha256 record, newest first.

  Each step is read in full onto this process's first device, as the record
  describes it (no model needed); meant for error messages.
  """
  folder = Path(run_dir).absolute() / FOLDER
  if not folder.is_dir():
    return []
  manager = _manager(folder)
  try:
    steps = sorted((s for s in manager.all_steps() if below is None or s < below), reverse=True)
    return [s for s in steps if _is_intact(manager, s, folder / str(s))]
  finally:
    manager.close()


def _is_intact(manager: ocp.CheckpointManager, step: int, where: Path) -> bool:
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  ok = True
  with _collect_orbax_leftovers(), warnings.catch_warnings():
    warnings.simplefilter("ignore")
    try:
      _, _, leaves = _read_json_items(manager, step, where)
      stored = manager.item_metadata(step)["state"].tree
      abstract = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), stored
      )
      got = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
      _check_leaves(where, got.state, leaves)
    except Exception:  # any failure makes the step not intact
      _drop_orbax_leftovers()
      ok = False
  return ok


def _describe_mismatch(
  expected: dict[tuple[str, ...], Any], got: dict[tuple[str, ...], Any]
) -> list[str]:
  """The leaves that differ between the model's flattened tree and the file's,
  the shallowest first (the params before the optimizer's copies of them)."""
  out = []
  for k in sorted(set(expected) | set(got), key=lambda k: (len(k), k)):
    if k not in got:
      out.append(f"{_path(k)} missing from the file")
    elif k not in expected:
      out.append(f"{_path(k)} in the file but not in the model")
    else:
      e, g = expected[k], got[k]
      e_dtype, g_dtype = np.dtype(e.dtype), np.dtype(g.dtype)
      if tuple(e.shape) != tuple(g.shape) or e_dtype != g_dtype:
        out.append(
          f"{_path(k)}: file has {g_dtype}{list(g.shape)}, model expects {e_dtype}{list(e.shape)}"
        )
  return out


def _mismatch_error(where: Path, problems: list[str]) -> CheckpointError:
  shown = "; ".join(problems[:6]) + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
  return CheckpointError(f"checkpoint {where} does not match the model: {shown}")


def restore(run_dir: StrPath, template: Any, step: int | None = None) -> Restored:
  """The newest checkpoint of ``run_dir`` (or ``step``'s), read into the
  structure and the shardings of ``template`` (the state it was saved from,
  freshly initialised and placed on the devices).

  Raises:
    CheckpointError: no checkpoint, or no such step; a leaf missing, extra,
      or of another dtype or shape than the model's.
    DamagedCheckpointError: a file that cannot be read, or a leaf or the meta
      whose bytes differ from the sha256 saved with them (the error names the
      step folder, the file or leaf, and, when the newest step was asked for,
      the older intact steps).
  """
  run_dir = Path(run_dir)
  if not (run_dir / FOLDER).exists() and (run_dir / LEGACY_FILE).exists():
    return _legacy_restore(run_dir / LEGACY_FILE, template)
  newest = step is None
  manager, step, where = _open(run_dir, step)
  try:
    return _restore(manager, step, where, template)
  except DamagedCheckpointError as e:
    raise (e.with_intact(intact_steps(run_dir, below=step)) if newest else e) from None
  finally:
    manager.close()


def _restore(manager: ocp.CheckpointManager, step: int, where: Path, template: Any) -> Restored:
  arrays = _keys_to_data(template)
  meta, _, leaves = _read_json_items(manager, step, where)
  failed: CheckpointError | None = None
  with _collect_orbax_leftovers():
    try:
      described = manager.item_metadata(step)["state"]
      stored = described.tree if described is not None else None
    except Exception as e:
      failed = _damaged(where, e, "state/_METADATA or state/array_metadatas/")
    else:
      if not isinstance(stored, dict):
        failed = DamagedCheckpointError(
          where, "state/_METADATA (the arrays' tree) is missing or describes no arrays"
        )
  if failed is not None:
    raise failed
  problems = _describe_mismatch(ocp.tree.to_flat_dict(arrays), ocp.tree.to_flat_dict(stored))
  if problems:
    raise _mismatch_error(where, problems)
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
  with _collect_orbax_leftovers():
    try:
      got = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    except Exception as e:  # tensorstore and Orbax errors of damaged files
      # the JSON that a read of the arrays reads after state/_METADATA: their metadata
      json_error = isinstance(_innermost(e), json.JSONDecodeError | KeyError)
      failed = _damaged(where, e, "state/array_metadatas/" if json_error else "state/")
  if failed is not None:
    raise failed
  _check_leaves(where, got.state, leaves)
  state = jax.tree.map(
    lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
    template,
    got.state,
  )
  return Restored(state, meta, step)


# ---- the msgpack format of rnnjax 0.1: read for one release, never written ----


def _legacy_meta_and_state(path: Path) -> tuple[dict[str, Any], Any]:
  """The meta and the raw state dict of a legacy file, after its checksum."""
  try:
    env = msgpack.unpackb(path.read_bytes(), raw=False)
  except Exception as e:  # msgpack raises several types for damaged data
    raise CheckpointError(f"checkpoint {path} is corrupted (not a msgpack envelope: {e})") from None
  if not isinstance(env, dict) or env.get("format") != LEGACY_FORMAT:
    raise CheckpointError(
      f"checkpoint {path} is not an rnnjax checkpoint (format "
      f"{env.get('format') if isinstance(env, dict) else type(env).__name__!r}, "
      f"expected {LEGACY_FORMAT!r})"
    )
  if hashlib.sha256(env["state"]).hexdigest() != env["sha256"]:
    raise CheckpointError(f"checkpoint {path} is corrupted: its sha256 does not match its contents")
  try:
    state = serialization.msgpack_restore(env["state"])
  except Exception as e:
    raise CheckpointError(f"checkpoint {path} is corrupted ({e})") from None
  return json.loads(env["meta"]), state


def _legacy_restore(path: Path, template: Any) -> Restored:
  warnings.warn(
    f"checkpoint {path} is in the msgpack format of rnnjax 0.1, read for this release only; "
    f"resume the run (rnnjax train --resume) to write it as Orbax checkpoints in "
    f"{path.parent / FOLDER}",
    FutureWarning,
    stacklevel=3,
  )
  meta, got = _legacy_meta_and_state(path)
  if not isinstance(got, dict) or "step" not in got:
    raise CheckpointError(f"checkpoint {path} does not match the model: it has no step")
  step = int(got.pop("step"))
  host = jax.tree.map(np.asarray, _keys_to_data(template))
  expected = ocp.tree.to_flat_dict(serialization.to_state_dict(host))
  problems = _describe_mismatch(
    expected, {k: np.asarray(v) for k, v in ocp.tree.to_flat_dict(got).items()}
  )
  if problems:
    raise _mismatch_error(path, problems)
  try:
    restored = serialization.from_state_dict(host, got)
  except (ValueError, KeyError) as e:  # fields the flattened comparison cannot see (None)
    raise _mismatch_error(path, [str(e)]) from None

  def place(t: Any, r: Any) -> Any:  # onto the template's devices; keys from their data
    if _is_key(t):
      data = jax.random.key_data(t)
      return jax.random.wrap_key_data(_like(r, data), impl=jax.random.key_impl(t))
    return _like(r, t) if isinstance(t, jax.Array) else r

  return Restored(jax.tree.map(place, template, restored), meta, step)


def _like(value: Any, target: jax.Array) -> jax.Array:
  value = np.asarray(value, target.dtype)
  return jax.make_array_from_callback(value.shape, target.sharding, lambda index: value[index])

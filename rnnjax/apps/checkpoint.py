"""Checkpoints of training runs, on Orbax: params, optimizer state, TBPTT
carries and RNG, with the run's arguments beside them.

A run folder keeps its checkpoints in ``OUT/checkpoints/<step>/``, written by
an `orbax.checkpoint.CheckpointManager` (`Checkpoints`) with three items:

* ``state``: the arrays, through `orbax.checkpoint.args.StandardSave`
  (tensorstore files; each process writes the shards it holds, so sharded
  arrays are saved where they live), restored onto the shardings of an
  abstract target (`restore`);
* ``meta``: the run's arguments as JSON (`orbax.checkpoint.args.JsonSave`);
* ``sha256``: JSON, the sha256 of each leaf's bytes.

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
  `CheckpointError` naming the step folder and the leaf.
* **No pickle.** Orbax keeps arrays in tensorstore and metadata in JSON;
  the legacy reader below reads msgpack.

The msgpack format of rnnjax 0.1 (one ``OUT/checkpoint.ckpt`` file: an
envelope ``{format, meta, sha256, state}``) is still read, with a
`FutureWarning`, for one release, so that existing runs can be sampled and
resumed; it is never written. The release after this one drops the reader
and names the file in a `CheckpointError`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
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


class CheckpointError(ValueError):
  """A checkpoint that cannot be used: corrupted, missing, or not matching the model."""


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
        sha256=ocp.args.JsonSave(_digests(arrays)),
      ),
      force=True,
    )

  def close(self) -> None:
    """Wait for the last save to be complete on disk, then release the manager."""
    self._manager.wait_until_finished()
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


def _newest(run_dir: Path) -> tuple[ocp.CheckpointManager, int, Path]:
  folder = run_dir.absolute() / FOLDER
  if not folder.is_dir():
    raise CheckpointError(f"checkpoint {run_dir / FOLDER}: no such folder")
  manager = _manager(folder)
  step = manager.latest_step()
  if step is None:
    manager.close()
    raise CheckpointError(
      f"checkpoint folder {run_dir / FOLDER} holds no complete checkpoint (a save "
      "interrupted before its first step was complete leaves none)"
    )
  return manager, step, run_dir / FOLDER / str(step)


def _damaged(where: Path, e: BaseException) -> CheckpointError:
  """A CheckpointError for a file that cannot be read, with the innermost cause's
  first line (tensorstore's names the array and the file: ``Error reading
  "params.out.w/0.0" in OCDBT database ...: ZSTD_decompressStream() failed``)."""
  while e.__cause__ is not None:
    e = e.__cause__
  lines = str(e).strip().splitlines()
  first = lines[0] if lines else type(e).__name__
  return CheckpointError(f"checkpoint {where} is corrupted ({type(e).__name__}: {first[:400]})")


def read_meta(run_dir: StrPath) -> dict[str, Any]:
  """The run arguments saved with the newest checkpoint of ``run_dir``."""
  run_dir = Path(run_dir)
  if not (run_dir / FOLDER).exists() and (run_dir / LEGACY_FILE).exists():
    return _legacy_meta_and_state(run_dir / LEGACY_FILE)[0]
  manager, step, where = _newest(run_dir)
  try:
    meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
  except Exception as e:  # a damaged JSON file, a missing item
    raise _damaged(where, e) from None
  finally:
    manager.close()
  if not isinstance(meta, dict):
    raise CheckpointError(f"checkpoint {where} is corrupted (its meta is not a JSON object)")
  return meta


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


def restore(run_dir: StrPath, template: Any) -> Restored:
  """The newest checkpoint of ``run_dir``, read into the structure and the
  shardings of ``template`` (the state it was saved from, freshly initialised
  and placed on the devices).

  Raises:
    CheckpointError: no checkpoint; a leaf missing, extra, or of another dtype
      or shape than the model's; a file that cannot be read or a leaf whose
      bytes differ from its saved sha256 (the error names the step folder and
      the leaf).
  """
  run_dir = Path(run_dir)
  if not (run_dir / FOLDER).exists() and (run_dir / LEGACY_FILE).exists():
    return _legacy_restore(run_dir / LEGACY_FILE, template)
  arrays = _keys_to_data(template)
  manager, step, where = _newest(run_dir)
  try:
    try:
      stored = manager.item_metadata(step)["state"].tree
    except Exception as e:
      raise _damaged(where, e) from None
    if not isinstance(stored, dict):
      raise CheckpointError(f"checkpoint {where} is corrupted (its state has no metadata)")
    problems = _describe_mismatch(ocp.tree.to_flat_dict(arrays), ocp.tree.to_flat_dict(stored))
    if problems:
      raise _mismatch_error(where, problems)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, arrays)
    try:
      got = manager.restore(
        step,
        args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          meta=ocp.args.JsonRestore(),
          sha256=ocp.args.JsonRestore(),
        ),
      )
    except Exception as e:  # tensorstore, JSON and Orbax errors of damaged files
      raise _damaged(where, e) from None
  finally:
    manager.close()
  saved = got.sha256 if isinstance(got.sha256, dict) else {}
  for name, digest in _digests(got.state).items():
    if saved.get(name) != digest:
      raise CheckpointError(
        f"checkpoint {where} is corrupted: the bytes of {name} do not match the sha256 "
        "saved with them"
      )
  state = jax.tree.map(
    lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
    template,
    got.state,
  )
  return Restored(state, got.meta, step)


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

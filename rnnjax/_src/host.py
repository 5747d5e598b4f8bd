"""The host allocator, tuned for XLA on CPU.

XLA's CPU runtime allocates each call's temporaries anew, and glibc maps
every block above its mmap threshold (at most 32 MiB by default), or above
64 MiB in a worker thread's own heap, fresh and returns it on free: each call
page-faults all of it in again. `tune_host_allocator` keeps such blocks on
the one main heap and the heap from being trimmed, so the pages are faulted
in once per process. What it buys on the benchmark machine is measured in
``benchmarks/results/profile_cpu.md``; what each of its settings buys rnnjax and
costs a PyTorch in the same process, in ``benchmarks/results/allocator_cpu.md``.
It is opt-in and no part of rnnjax's recommended configuration (issue 24).

`lapack_threads` limits OpenBLAS's threads around rnnjax's LAPACK-heavy calls
(the Lyapunov spectrum's QR every step); `rnnjax.jacobian` applies it itself.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax

F = TypeVar("F", bound=Callable[..., Any])

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8


def tune_host_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 2**31 - 1) -> bool:
  """Keep large host allocations on the heap (glibc ``mallopt``), process-wide.

  The same as starting Python with ``MALLOC_MMAP_THRESHOLD_``,
  ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_ARENA_MAX=1`` set:

  - blocks below ``mmap_threshold`` bytes come from the heap;
  - every thread allocates from the main heap (a thread's own heap is capped
    at 64 MiB, and glibc maps each larger block afresh);
  - memory freed at the heap's top goes back to the system only above
    ``trim_threshold`` bytes.

  So XLA's per-call temporaries reuse pages that are already mapped. The
  cost: the process keeps its peak heap, and its threads share one heap. No
  result changes. Call it once, before JAX's first computation (or
  ``jax.devices()``): the threads JAX starts then keep the heap they first
  allocate from.

  It is process-wide: every library in the process gets the same allocator.
  Issue 24 measured PyTorch in the same process slower with it (on a quiet
  2-core machine, its LSTM at (B, T, H) = (1, 1000, 128) 12.7 -> 16.8 ms and
  its GRU 127 -> 216 ms, forward+backward), and glibc offers no per-library
  setting, nor XLA's CPU runtime an allocator of its own. So it is opt-in:
  rnnjax's recommended configuration and its benchmark tables leave the
  allocator as it is, and the own-process kernel table is measured without it. Call it in a
  process that runs rnnjax alone (the ``rnnjax`` command does); the LSTM's
  forward+backward at (32, 100, 256) took 48.3 and 50.8 ms with it against
  63.7 and 63.6 ms without (``benchmarks/results/profile_cpu.md``).
  ``benchmarks/bench_allocator.py`` measures each setting alone and together,
  rnnjax and PyTorch in one process (``benchmarks/results/allocator_cpu.md``).

  Args:
    mmap_threshold: bytes; blocks at least this large are still mapped.
    trim_threshold: bytes of free memory at the heap's top before it is
      returned to the system.

  Returns:
    True when every setting took effect. False where the C library is not
    glibc (macOS, Windows, musl: nothing is changed) or refused a setting
    (some glibc versions refuse an mmap threshold above 32 MiB); the settings
    it accepted stay.

  Raises:
    ValueError: a threshold that is not an int in ``[1, 2**31)``.
  """
  for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
      raise ValueError(
        f"rnnjax.tune_host_allocator: {name} must be a positive int below 2**31 bytes, "
        f"got {value!r}"
      )
  if not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
    if not hasattr(libc, "gnu_get_libc_version"):  # musl's mallopt ignores its arguments
      return False
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = (
    (_M_MMAP_THRESHOLD, mmap_threshold),
    (_M_ARENA_MAX, 1),
    (_M_TRIM_THRESHOLD, trim_threshold),
  )
  return all([bool(mallopt(param, value)) for param, value in settings])


# ----------------------------------------------------------------- OpenBLAS's threads
@contextlib.contextmanager
def lapack_threads(n: int = 1) -> Iterator[list[tuple[str, int]]]:
  """Run the block with every loaded OpenBLAS library (SciPy's, which JAX calls
  for LAPACK on CPU, and NumPy's) limited to ``n`` threads, and restore each
  one's count after it: `threadpoolctl.threadpool_limits` on the BLAS libraries.

  A loop of small LAPACK calls (a QR or a Cholesky per step) runs fastest on one
  thread: OpenBLAS's pool, which starts one thread per core, otherwise wakes and
  competes with XLA's for the cores at every call. Where the environment sets
  ``OPENBLAS_NUM_THREADS``, that choice is kept and nothing is changed.
  Process-wide while the block runs (OpenBLAS has one count per library), so
  NumPy or SciPy calls made in other threads meanwhile run with ``n`` too; no
  result changes.

  Yields:
    ``[(library path, count before)]`` for each OpenBLAS library the limit
    lowers (empty where none is loaded or the environment chose).
  """
  if os.environ.get("OPENBLAS_NUM_THREADS"):
    yield []
    return
  with contextlib.suppress(ImportError):  # JAX's CPU LAPACK is SciPy's: load it first
    import scipy.linalg.cython_lapack  # type: ignore[import-untyped]  # noqa: F401
  import threadpoolctl  # type: ignore[import-untyped]

  lowered = [
    (lib["filepath"], lib["num_threads"])
    for lib in threadpoolctl.threadpool_info()
    if lib["internal_api"] == "openblas" and lib["num_threads"] > n
  ]
  with threadpoolctl.threadpool_limits(limits=n, user_api="blas"):
    yield lowered


def lapack_single_threaded(fn: F) -> F:
  """``fn`` run under `lapack_threads` (1) and waited for, when called with
  concrete arrays on CPU; called as it is inside a trace (``jit``, ``grad``,
  ``vmap``), where nothing runs yet, and on other backends."""

  @functools.wraps(fn)
  def wrapper(*args: Any, **kwargs: Any) -> Any:
    leaves = jax.tree_util.tree_leaves((args, kwargs))
    if jax.default_backend() != "cpu" or any(isinstance(x, jax.core.Tracer) for x in leaves):
      return fn(*args, **kwargs)
    with lapack_threads(1):
      return jax.block_until_ready(fn(*args, **kwargs))

  return wrapper  # type: ignore[return-value]

"""The host allocator, tuned for XLA on CPU.

XLA's CPU runtime allocates each call's temporaries anew, and glibc maps
every block above its mmap threshold (at most 32 MiB by default), or above
64 MiB in a worker thread's own heap, fresh and returns it on free: each call
page-faults all of it in again. `tune_host_allocator` keeps such blocks on
the one main heap and the heap from being trimmed, so the pages are faulted
in once per process. What it buys on the benchmark machine is measured in
``benchmarks/results/profile_cpu.md``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

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
  allocate from. The ``rnnjax`` command and the benchmarks call it first.

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

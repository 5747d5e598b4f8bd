"""The host allocator, tuned for XLA on CPU.

XLA's CPU runtime allocates each call's temporaries as one block, and every
block above glibc's mmap threshold (at most 32 MiB by default) is mapped
fresh and returned on free, so each call page-faults all of it in again (a
fifth of an LSTM training step's time at (B, T, I, H) = (32, 100, 256, 256)
on the benchmark machine: ``benchmarks/results/profile_cpu.md``).
`tune_host_allocator` keeps such blocks on the heap and the heap from being
trimmed, so the pages are faulted in once per process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_GLIBC_MMAP_MAX = 32 << 20  # glibc's largest mmap threshold where 1 GiB is refused


def tune_host_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = 2**31 - 1) -> bool:
  """Keep large host allocations on the heap (glibc ``mallopt``), process-wide.

  Equivalent to starting Python with ``MALLOC_MMAP_THRESHOLD_`` and
  ``MALLOC_TRIM_THRESHOLD_`` set. Blocks below ``mmap_threshold`` bytes come
  from the heap and memory freed at its top is returned to the system only
  above ``trim_threshold`` bytes, so XLA's per-call temporaries reuse pages
  that are already mapped. The cost: the process keeps its peak heap. It
  changes no result. Call it once, early; `rnnjax train`, ``demo``,
  ``experiment`` and the benchmarks do.

  Args:
    mmap_threshold: bytes; allocations at least this large are still mapped.
      Where glibc refuses it (it caps the threshold at 32 MiB on some
      versions), 32 MiB is used.
    trim_threshold: bytes of free memory at the heap's top before it is
      returned to the system.

  Returns:
    True when both settings took effect; False where the C library is not
    glibc (macOS, Windows, musl), where nothing is changed.

  Raises:
    ValueError: a threshold that is not a positive int.
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
  except (OSError, AttributeError):  # no glibc (musl has no mallopt)
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  mmap_ok = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
  if not mmap_ok and mmap_threshold > _GLIBC_MMAP_MAX:
    mmap_ok = bool(mallopt(_M_MMAP_THRESHOLD, _GLIBC_MMAP_MAX))
  return mmap_ok and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))

"""`rj.host.tune_host_allocator`: large blocks stay mapped between allocations."""

import subprocess
import sys

import pytest

import rnnjax as rj

# A fresh process allocates and touches 64 MiB three times, reads its minor
# page faults, then tunes the allocator and does it again. glibc maps a
# 64 MiB block afresh each time (16384 faults of 4 KiB pages); tuned, only
# the first allocation faults its pages in.
PROBE = """
import ctypes, ctypes.util, json, resource
import rnnjax as rj
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
n = 64 << 20
def faults():
    p = libc.malloc(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    ctypes.memset(p, 1, n)
    f = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    libc.free(p)
    return f
plain = [faults() for _ in range(3)]
tuned = rj.host.tune_host_allocator()
print(json.dumps({"plain": plain, "tuned": tuned, "after": [faults() for _ in range(3)]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's (Linux)")
def test_tuned_allocator_reuses_mapped_pages():
  import json

  proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  pages = (64 << 20) // 4096
  if not out["tuned"]:
    pytest.skip("this C library refused a setting (not glibc, or an mmap threshold cap)")
  assert all(f > pages // 2 for f in out["plain"]), out  # every block mapped afresh
  assert all(f < pages // 100 for f in out["after"][1:]), out  # the heap keeps its pages


@pytest.mark.parametrize("arg", ["mmap_threshold", "trim_threshold"])
@pytest.mark.parametrize("bad", [0, 2**31, 1.5, True])
def test_bad_thresholds_name_the_argument(arg, bad):
  with pytest.raises(ValueError, match=f"{arg} must be a positive int below 2"):
    rj.host.tune_host_allocator(**{arg: bad})

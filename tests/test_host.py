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


# ----------------------------------------------------------------- OpenBLAS's threads
# A fresh process without OPENBLAS_NUM_THREADS: the thread counts of every loaded
# OpenBLAS library before, inside and after `lapack_threads(1)`.
THREADS_PROBE = """
import ctypes, json
import scipy.linalg  # SciPy's OpenBLAS, JAX's CPU LAPACK
from rnnjax._src import host
# Read each library's count through its own symbol, not through threadpoolctl, which
# lapack_threads uses: the probe stays independent of what it checks.
libs = []
with open("/proc/self/maps") as f:
    paths = sorted({l.split(None, 5)[-1].strip() for l in f if "openblas" in l.lower()})
for path in (p for p in paths if p.startswith("/") and ".so" in p):
    lib = ctypes.CDLL(path)
    for name in ("scipy_openblas_get_num_threads64_", "scipy_openblas_get_num_threads",
                 "openblas_get_num_threads64_", "openblas_get_num_threads"):
        if hasattr(lib, name):
            libs.append(getattr(lib, name))
            break
before = [get() for get in libs]
with host.lapack_threads(1) as changed:
    inside = [get() for get in libs]
after = [get() for get in libs]
print(json.dumps(dict(n=len(libs), before=before, inside=inside, after=after, changed=changed)))
"""


def _threads_probe(**env):
  import json
  import os

  environ = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"} | env
  proc = subprocess.run(
    [sys.executable, "-c", THREADS_PROBE], capture_output=True, text=True, check=True, env=environ
  )
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux's")
def test_lapack_threads_limits_inside_and_restores_after():
  out = _threads_probe(OMP_NUM_THREADS="3")  # OpenBLAS starts 3 threads
  if not out["n"]:
    pytest.skip("no OpenBLAS loaded (SciPy built against another BLAS)")
  assert out["inside"] == [1] * out["n"], out
  assert out["after"] == out["before"], out
  assert [b for _, b in out["changed"]] == [b for b in out["before"] if b > 1], out
  assert any(b > 1 for b in out["before"]), out  # the limit had something to do


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/maps is Linux's")
def test_lapack_threads_keeps_the_environments_choice():
  out = _threads_probe(OPENBLAS_NUM_THREADS="2")
  assert out["changed"] == [] and out["inside"] == out["before"] == out["after"], out


def test_lapack_heavy_functions_run_under_the_limit_and_equal_the_plain_call(monkeypatch):
  import contextlib

  import jax
  import jax.numpy as jnp

  from rnnjax._src import host

  entered = []

  @contextlib.contextmanager
  def spy(n=1):
    entered.append(n)
    yield []

  monkeypatch.setattr(host, "lapack_threads", spy)
  cell = rj.elman(6)
  params = cell.init(jax.random.key(0), 2)
  xs = jax.random.normal(jax.random.key(1), (30, 2))
  lyap = rj.jacobian.lyapunov_spectrum
  got = lyap(cell, params, xs, k=3, transient=5)
  assert entered == [1]
  plain = lyap.__wrapped__(cell, params, xs, k=3, transient=5)  # the jitted function itself
  assert jnp.array_equal(got, plain)
  traced = jax.jit(lambda p: lyap(cell, p, xs, k=3, transient=5))(params)  # inside a trace
  assert entered == [1]  # nothing runs while tracing: no limit to set
  assert jnp.allclose(traced, plain, rtol=1e-6, atol=1e-6)
  Js = rj.jacobian.step_jacobians(cell, params, xs)
  sv = rj.jacobian.log_singular_values(Js)
  rj.jacobian.norms(Js)
  rj.jacobian.log_product_norms(Js)
  rj.jacobian.window_spectra(Js, 10)
  assert entered == [1] * 5
  assert jnp.array_equal(sv, rj.jacobian.log_singular_values.__wrapped__(Js))

"""Builds rnnjax's optional CPU kernel (rnnjax/_src/csrc), an XLA FFI extension.

Everything else is in pyproject.toml. The extension is optional: where no C++
compiler (or no jaxlib with the XLA FFI headers) is found at install time, the
build prints a warning and rnnjax installs without it, and `rnnjax.scan` runs
its pure-JAX kernels (`rnnjax._src.cpu_kernel.available()` is then False).
"""

import importlib.util
import os

from setuptools import Extension, setup


def _ffi_include() -> list[str]:
  """jaxlib's include directory (the XLA FFI headers, jax.ffi.include_dir()),
  found without importing jaxlib; pyproject's build requirements install it."""
  spec = importlib.util.find_spec("jaxlib")
  if spec is None or not spec.submodule_search_locations:
    return []  # no jaxlib at build time: the compile fails, and the extension is skipped
  return [os.path.join(next(iter(spec.submodule_search_locations)), "include")]


setup(
  ext_modules=[
    Extension(
      "rnnjax._src._rnn_cpu",
      sources=["rnnjax/_src/csrc/rnn_cpu.cc", "rnnjax/_src/csrc/rnn_avx512.cc"],
      depends=["rnnjax/_src/csrc/rnn_cells.h", "rnnjax/_src/csrc/rnn_kernels.h"],
      include_dirs=_ffi_include(),
      language="c++",
      extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-Wno-maybe-uninitialized"],
      optional=True,
    )
  ]
)

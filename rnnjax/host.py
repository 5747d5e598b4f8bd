"""Process-wide switches of the host (CPU) runtime.

`tune_host_allocator` keeps XLA's large temporaries on glibc's heap, so a
jitted call does not page-fault them in again each time. Call it once, at the
start of a program that runs rnnjax alone, before JAX's first computation: it
changes the allocator of every library in the process (it is opt-in, see its
documentation for what it costs a co-resident PyTorch).
"""

from rnnjax._src.host import tune_host_allocator as tune_host_allocator

__all__ = ["tune_host_allocator"]

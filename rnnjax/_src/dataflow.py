"""Which params leaves a function reads, read off its jaxpr (no compute runs).

The generic backward rules use it twice: a per-step VJP differentiates only the
leaves a step reads (so the reverse scan does not sum zeros for, say, ``w_x``
after a hoisted projection), and the hand-written BPTT checks at trace time that
its rules give every leaf the recurrence reads a gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src.typing import Params


def abstract(tree: Any) -> Any:
  """``tree`` with each leaf replaced by its ``jax.ShapeDtypeStruct``."""
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), tree)


def params_read(fn: Callable[..., Any], params: Params, *args: Any) -> list[bool]:
  """For each leaf of ``params`` (in ``jax.tree.leaves`` order): does
  ``fn(params, *args)`` read it? Shapes only: ``params`` and ``args`` may be
  tracers, arrays or ``ShapeDtypeStruct``."""
  leaves, treedef = jax.tree.flatten(params)

  def flat(ls: list[Any], *a: Any) -> Any:
    return fn(jax.tree.unflatten(treedef, ls), *a)

  jaxpr = jax.make_jaxpr(flat)(abstract(leaves), *abstract(args)).jaxpr
  used = {id(v) for eqn in jaxpr.eqns for v in eqn.invars} | {id(v) for v in jaxpr.outvars}
  return [id(v) in used for v in jaxpr.invars[: len(leaves)]]

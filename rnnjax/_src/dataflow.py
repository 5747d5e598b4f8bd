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
import jax.extend.core as jax_core
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
  return _inputs_read(jaxpr)[: len(leaves)]


def _inputs_read(jaxpr: Any) -> list[bool]:
  """For each input of ``jaxpr``: does any equation or output use it? An equation
  that calls a sub-jaxpr on its inputs one to one (``jit``, ``checkpoint``,
  ``scan``) reads only the inputs the sub-jaxpr reads; any other equation
  (``cond``, whose predicate comes first, ...) reads all of them."""
  used = {id(v) for v in jaxpr.outvars}
  for eqn in jaxpr.eqns:
    subs = list(jax_core.jaxprs_in_params(eqn.params))
    if len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
      reads = _inputs_read(subs[0])
      used |= {id(v) for v, r in zip(eqn.invars, reads, strict=True) if r}
    else:
      used |= {id(v) for v in eqn.invars}
  return [id(v) in used for v in jaxpr.invars]

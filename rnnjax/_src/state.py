"""The flattened state ``s``: a carry as one ``[..., S]`` array, and back.

The one flattener of rnnjax. The Jacobian tools take ``∂s_t/∂s_{t-1}`` over
it, zoneout masks it, and the parallel-in-time solvers iterate on it. Each
leaf's trailing shape (its shape past the batch axes: ``(H,)``, or a
ConvLSTM's ``(h, w, C)``) is flattened and the leaves are concatenated in
order, so the LSTM's ``LSTMCarry(h, c)`` is ``s = [h; c]`` (S = 2H).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src.typing import Array, Carry, Shape


def trailing_shapes(like: Carry, batch_ndim: int | None = None) -> tuple[Shape, ...]:
  """Each leaf's shape past its ``batch_ndim`` leading axes (default: its last axis).

  Args:
    like: a carry.
    batch_ndim: how many leading axes are batch axes; None takes each leaf's
      last axis as its features.

  Returns:
    One shape per leaf, in ``jax.tree.leaves`` order.
  """
  leaves = jax.tree.leaves(like)
  if batch_ndim is None:
    return tuple(tuple(leaf.shape[-1:]) for leaf in leaves)
  return tuple(tuple(leaf.shape[batch_ndim:]) for leaf in leaves)


def flatten(carry: Carry, shapes: Sequence[Shape] | None = None) -> Array:
  """The carry as one ``s: [..., S]``.

  Args:
    carry: a carry, leaves ``[..., *shape]``.
    shapes: each leaf's trailing shape, flattened into ``s``'s last axis;
      None: each leaf's last axis as it is (leaves ``[..., H]``).

  Returns:
    ``s: [..., S]``, the leaves (flattened past the batch) concatenated in order.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> from rnnjax._src import state
    >>> s = state.flatten(rj.LSTMCarry(jnp.ones((2, 3)), jnp.zeros((2, 3))))
    >>> s.shape, s[0].tolist()
    ((2, 6), [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
  """
  leaves = jax.tree.leaves(carry)
  if shapes is not None:
    leaves = [
      leaf.reshape((*leaf.shape[: leaf.ndim - len(shape)], -1))
      for leaf, shape in zip(leaves, shapes, strict=True)
    ]
  return leaves[0] if len(leaves) == 1 else jnp.concatenate(leaves, axis=-1)


def unflatten(s: Array, like: Any, shapes: Sequence[Shape] | None = None) -> Carry:
  """Inverse of `flatten`.

  Args:
    s: ``[..., S]``, a flattened state.
    like: a carry of the wanted structure (its values are not read), or its
      ``jax.tree.structure`` together with ``shapes``.
    shapes: each leaf's trailing shape; None: each leaf of ``like``'s last axis.

  Returns:
    A carry of ``like``'s structure with leaves ``[..., *shape]``.
  """
  if isinstance(like, jax.tree_util.PyTreeDef):
    tree = like
    assert shapes is not None, "unflatten: a tree structure needs the leaves' shapes"
  else:
    leaves, tree = jax.tree.flatten(like)
    if shapes is None:
      sizes = np.cumsum([leaf.shape[-1] for leaf in leaves])[:-1]
      return jax.tree.unflatten(tree, jnp.split(s, sizes, axis=-1))
  cuts = np.cumsum([math.prod(shape) for shape in shapes])[:-1]
  parts = jnp.split(s, cuts, axis=-1)
  return jax.tree.unflatten(
    tree,
    [p.reshape((*s.shape[:-1], *shape)) for p, shape in zip(parts, shapes, strict=True)],
  )

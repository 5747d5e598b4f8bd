"""Backpropagation through time, written by hand, for every cell.

`bptt_scan` is the fast path, a `jax.custom_vjp` in the layout of
``jax.experimental.rnn``: primal, ``_fwd`` returning ``(out, residuals)``,
``_bwd(res, g)``, and ``defvjp`` at the bottom. The lecture's derivation:

    L = Σ_t L_t,   ∂L/∂W = Σ_t ∂L/∂h_t Σ_{i≤t} (Π_{j=i+1}^{t} ∂h_j/∂h_{j-1}) ∂h_i/∂W

is evaluated right to left, as one reverse scan that carries
``dh_t = ∂L/∂h_t`` (and ``dc_t`` for the LSTM). At an episode reset (``resets``)
the step's carry was the reset carry, so the step's ``∂L/∂carry_{t-1}`` goes to
the reset carry's gradient (summed in the scan's carry) and nothing crosses
into the steps before it. Each step does only the
recurrent part, the cell's local backward (``dz_t`` and
``dh_{t-1} = dz_t w_hᵀ + …``); the weight gradients are then single large
matmuls over all ``N = T·B`` rows:

    dw_x = Xᵀ dZx     db = Σ_n dZx     dX = dZx w_xᵀ     dw_h = H_prevᵀ dZh

`reference_elman_grads` is the lecture taken literally: the sum over time of
products of step Jacobians, for teaching and for the tests.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax._src import dataflow, kernel
from rnnjax._src.activations import ACTIVATIONS
from rnnjax._src.cells.base import Cell
from rnnjax._src.cells.elman import ElmanParams
from rnnjax._src.typing import Array, Carry, Params


@partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def bptt_scan(
  cell: Cell,
  unroll: int,
  params: Params,
  xs: Array,
  carry0: Carry,
  mask: Array | None,
  resets: Array | None = None,
  reset_carry: Carry | None = None,
) -> tuple[Carry, Array]:
  """The scan kernel with the hand-written BPTT as its VJP.

  `rnnjax.scan` calls this for ``backward="bptt"`` after checking its
  arguments and reversing sequences; call it directly only with inputs
  already in that form.

  Args:
    cell: the `rnnjax.Cell`.
    unroll: the scan unroll factor of both passes.
    params: the cell's params.
    xs: ``[T, B, I]`` time-major inputs.
    carry0: the initial carry for batch B.
    mask: ``[T, B]`` bool, True on valid steps (a prefix of each sequence),
      or None when every step is valid.
    resets: ``[T, B]`` bool in processing order, True where the carry is reset
      to ``reset_carry`` before the step (never on a padded step), or None.
    reset_carry: what a reset restores (leaves ``[B, ...]``, like ``carry0``);
      None means ``carry0``. Its gradient sums the gradients that reach the
      carries the resets put in place.

  Returns:
    ``(carry_T, ys)``: the carry after each sequence's last valid step, and
    ``ys: [T, B, H]``, zero on padding.
  """
  zx = cell.project(params, xs)  # [T, B, kH]
  return kernel.forward(
    cell, params, zx, carry0, mask, unroll, resets=resets, reset_carry=reset_carry
  )


def _step_inputs(carry0: Carry, zx: Array) -> tuple[Any, Any]:
  """One step's abstract carry and ``zx: [B, kH]``, for trace-time checks."""
  return dataflow.abstract(carry0), jax.ShapeDtypeStruct(zx.shape[1:], zx.dtype)


def _check_rules_cover_params(cell: Cell, params: Params, carry0: Carry, zx: Array) -> None:
  """Fail at trace time when ``fast_step`` reads a params leaf that neither
  ``recurrent_grads`` nor the per-step gradients of ``backward_step`` cover.

  The hand-written backward assembles ``dparams`` from the input projection's
  VJP (every leaf ``project`` reads), the fields ``recurrent_grads`` names and
  the leaves ``backward_step`` gives a per-step gradient; any other leaf the
  recurrence reads would silently get a zero gradient. Which leaves
  ``fast_step`` reads is read off its jaxpr; no compute runs.
  """
  recurrent_grads = cell.recurrent_grads
  assert recurrent_grads is not None  # without a rule every leaf is differentiated per step
  carry, zx_t = _step_inputs(carry0, zx)
  read = dataflow.params_read(cell.fast_step, params, carry, zx_t)
  _, res = jax.eval_shape(cell.fast_step, params, carry, zx_t)
  _, _, rows, dleaves = jax.eval_shape(
    lambda p, c, r: cell.backward_step(p, c, c, r, (c, _output(cell, c, r))),
    params,
    carry,
    res,
  )
  named = set(jax.eval_shape(recurrent_grads, params, carry, res, rows))
  per_step = [d is not None for d in dleaves] if dleaves is not None else [False] * len(read)

  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  missing = [
    jax.tree_util.keystr(path)
    for path, r, s in zip(paths, read, per_step, strict=True)
    if r and not s and _field(path) not in named
  ]
  if missing:
    raise ValueError(
      f"rnnjax.scan(backward='bptt'): {cell!r}'s fast_step reads params {missing}, but its "
      f"recurrent_grads gives gradients only to {sorted(named)}, so the hand-written "
      f"backward would leave them without one; name them in recurrent_grads, or use "
      f"backward='autodiff'"
    )


def _output(cell: Cell, carry: Carry, res: Any) -> Array:
  return kernel.outputs(cell, carry, res)


def _fwd(
  cell: Cell,
  unroll: int,
  params: Params,
  xs: Array,
  carry0: Carry,
  mask: Array | None,
  resets: Array | None = None,
  reset_carry: Carry | None = None,
) -> tuple[tuple[Carry, Array], tuple[Any, ...]]:
  zx = cell.project(params, xs)  # [T, B, kH]
  if cell.recurrent_grads is not None:
    _check_rules_cover_params(cell, params, carry0, zx)
  carry_T, ys, carries, res = kernel.forward(
    cell, params, zx, carry0, mask, unroll, keep=True, resets=resets, reset_carry=reset_carry
  )
  return (carry_T, ys), (params, xs, carry0, carries, res, mask, resets, reset_carry)


def _shift(
  carry0: Carry, carries: Carry, resets: Array | None = None, reset_carry: Carry | None = None
) -> Carry:
  """The carry each step started from: ``[carry_0, carry_1, ..., carry_{T-1}]``,
  with ``reset_carry`` (default ``carry_0``) in place of ``carry_{t-1}`` where
  ``resets[t]`` is set."""
  prevs = jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]]), carry0, carries)
  return kernel.reset(resets, prevs, carry0 if reset_carry is None else reset_carry)


def _cut_at_reset(r: Array | None, d_prev: Carry, acc: Carry) -> tuple[Carry, Carry]:
  """At a reset (``r: [B]``) the step started from the reset carry: its
  ``∂L/∂carry_{t-1}`` joins the reset carry's gradient ``acc`` and none
  crosses into the previous step. ``r=None``: unchanged."""
  if r is None:
    return d_prev, acc
  zero = jax.tree.map(jnp.zeros_like, d_prev)
  acc = jax.tree.map(jnp.add, acc, kernel.hold(r, d_prev, zero))
  return kernel.hold(r, zero, d_prev), acc


def _reset_acc(dcarry_T: Carry, resets: Array | None) -> Carry:
  """The reset carry's gradient from the reset points, zeros (or None)."""
  return None if resets is None else jax.tree.map(jnp.zeros_like, dcarry_T)


def _add_reset_acc(dcarry0: Carry, acc: Carry) -> Carry:
  return dcarry0 if acc is None else jax.tree.map(jnp.add, dcarry0, acc)


def _field(path: Any) -> Any:
  """The top-level field name of a params leaf's path (attribute or dict key)."""
  return getattr(path[0], "name", getattr(path[0], "key", None)) if path else None


def _add_fields(params: Params, dleaves: list[Array], grads: dict[str, Any]) -> list[Array]:
  """``dleaves`` (one per params leaf, in ``jax.tree.leaves(params)`` order) with
  ``grads[field]`` added to the leaves under each top-level ``field``; works for
  any params pytree whose top level is named (NamedTuple, dict, dataclass)."""
  out = list(dleaves)
  paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  for name, grad in grads.items():
    idx = [i for i, path in enumerate(paths) if _field(path) == name]
    parts = jax.tree.leaves(grad)
    if not idx or len(parts) != len(idx):
      fields = sorted({str(_field(p)) for p in paths})
      raise ValueError(
        f"rnnjax.scan(backward='bptt'): recurrent_grads returned a gradient for {name!r}, "
        f"which matches {len(idx)} params leaves with {len(parts)} gradient leaves; its keys "
        f"must be the params' top-level fields {fields}, each with that field's structure"
      )
    for i, part in zip(idx, parts, strict=True):
      out[i] = out[i] + part
  return out


def _bwd(
  cell: Cell, unroll: int, residuals: tuple[Any, ...], g: tuple[Carry, Array]
) -> tuple[Params, Array, Carry, None, None, Carry]:
  """One reverse scan of ``cell.backward_step``, then the weight gradients.

  Each step's local backward returns ``(dcarry_prev, dzx, rows, dleaves)``:
  ``dzx`` and ``rows`` are stacked over time (``rows`` for the cell's
  ``recurrent_grads`` rule, None without one), and ``dleaves`` (a per-step
  params gradient, one entry per leaf, None where there is none) is summed in
  the scan's carry, so memory stays O(params), not O(T·params).

  Padding: a padded step contributes nothing (its ``dzx`` and ``rows`` are
  zeroed and, when it gives per-step params gradients, so are the cotangents
  entering it), and ``∂L/∂carry`` passes through it unchanged.
  """
  params, xs, carry0, carries, res, mask, resets, reset_carry = residuals
  dcarry_T, dys = g
  prevs = _shift(carry0, carries, resets, reset_carry)
  treedef = jax.tree.structure(params)

  def local(prev: Carry, cur: Carry, r: Any, d: Carry, dy: Array) -> Any:
    return cell.backward_step(params, prev, cur, r, (d, dy))

  one = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (prevs, carries, res))
  dleaves0 = jax.eval_shape(local, *one, dataflow.abstract(dcarry_T), _one_step(dys))[3]
  acc0 = None if dleaves0 is None else jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), dleaves0)

  def body(state: tuple[Carry, Any, Carry], inp: Any) -> tuple[tuple[Carry, Any, Carry], Any]:
    d, acc, racc = state
    prev, cur, r, dy, m, rs = inp
    d_in, dy_in = d, dy
    if m is not None and acc is not None:  # no cotangent enters a padded step
      d_in = kernel.hold(m, d, jax.tree.map(jnp.zeros_like, d))
      dy_in = jnp.where(m[:, None], dy, jnp.zeros((), dy.dtype))
    d_prev, dzx, rows, dleaves = local(prev, cur, r, d_in, dy_in)
    same = cell.compiled.rows_are_dzx  # declared: the rows for recurrent_grads are dzx
    if m is not None:  # padding: pass ∂L/∂carry through, no gradient from the step
      d_prev = kernel.hold(m, d_prev, d)
      dzx = jnp.where(m[:, None], dzx, jnp.zeros((), dzx.dtype))
      rows = dzx if same else jax.tree.map(lambda a: jnp.where(kernel.rows(m, a), a, 0), rows)
    d_prev, racc = _cut_at_reset(rs, d_prev, racc)
    if acc is not None:
      acc = jax.tree.map(jnp.add, acc, dleaves)
    return (d_prev, acc, racc), (dzx, None if same else rows)

  (dcarry0, acc, racc), (dzx, rows) = kernel.scan(
    body,
    (dcarry_T, acc0, _reset_acc(dcarry_T, resets)),
    (prevs, carries, res, dys, mask, resets),
    reverse=True,
    unroll=unroll,
  )
  dreset = None
  if reset_carry is None:  # the resets restored carry0: their gradient is carry0's
    dcarry0 = _add_reset_acc(dcarry0, racc)
  elif racc is not None:
    dreset = jax.tree.map(lambda d, c: d.astype(c.dtype), racc, reset_carry)

  T, B, _ = xs.shape
  N = T * B

  def flat(a: Array) -> Array:  # [T, B, ...] -> [N, ...]
    return a.reshape(N, *a.shape[2:])

  # Through the cell's own input projection, as one pass over all N = T·B rows;
  # for the affine zx = x w_x + b this is dw_x = Xᵀ dZx, db = Σ dZx, dX = dZx w_xᵀ.
  # (The projection's primal output is unused here, so XLA drops its recomputation.)
  zx, project_vjp = jax.vjp(cell.project, params, xs)
  dparams_x, dxs = project_vjp(dzx.astype(zx.dtype))
  dleaves = jax.tree.leaves(dparams_x)  # one per params leaf, in the params' order
  if cell.recurrent_grads is not None:  # e.g. dw_h = H_prevᵀ dZh, one matmul
    rule = cell.recurrent_grads(
      params,
      jax.tree.map(flat, prevs),
      jax.tree.map(flat, res),
      jax.tree.map(flat, dzx if rows is None else rows),
    )
    dleaves = _add_fields(params, dleaves, rule)
  if acc is not None:  # the per-step gradients, summed over time
    dleaves = [d if a is None else d + a for d, a in zip(dleaves, acc, strict=True)]
  dparams = jax.tree.unflatten(
    treedef,
    [d.astype(jnp.result_type(p)) for d, p in zip(dleaves, jax.tree.leaves(params), strict=True)],
  )
  dcarry0 = jax.tree.map(lambda d, c: d.astype(c.dtype), dcarry0, carry0)
  return dparams, dxs.astype(xs.dtype), dcarry0, None, None, dreset


def _one_step(a: Array) -> jax.ShapeDtypeStruct:
  """``a: [T, ...]``'s one-step abstract value ``[...]``."""
  return jax.ShapeDtypeStruct(a.shape[1:], a.dtype)


bptt_scan.defvjp(_fwd, _bwd)


def reference_elman_grads(
  params: ElmanParams, xs: Array, h0: Array, dys: Array, activation: str = "tanh"
) -> ElmanParams:
  """The lecture's BPTT for the vanilla RNN, literally, for one sequence.

  With ``L = Σ_t <dys[t], h_t>`` (any loss's output cotangents ``dys``):

      ∂L/∂W = Σ_t ∂L_t/∂h_t Σ_{i=1}^{t} (Π_{j=i+1}^{t} ∂h_j/∂h_{j-1}) ∂⁺h_i/∂W
      ∂h_j/∂h_{j-1} = diag(f'(z_j)) W

  where ``∂⁺h_i/∂W`` is the immediate partial derivative (``h_{i-1}`` held
  fixed). Every product of step Jacobians is formed explicitly, O(T²H³):
  a teaching reference, not a fast path.

  Args:
    params: `rnnjax.ElmanParams` (``w_x: [I, H]``, ``w_h: [H, H]``, ``b: [H]``).
    xs: ``[T, I]``, one sequence.
    h0: ``[H]``, the initial state.
    dys: ``[T, H]``, the cotangents of the outputs ``h_1 .. h_T``.
    activation: ``"tanh"``, ``"relu"``, ``"sigmoid"`` or ``"linear"``.

  Returns:
    `rnnjax.ElmanParams` of gradients (row-vector layout, as the params).

  Examples:
    The lecture's sum equals autodiff through `rnnjax.scan`:

    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.elman(3)
    >>> params = cell.init(jax.random.key(0), 2)
    >>> xs, dys = jax.random.normal(jax.random.key(1), (4, 2)), jnp.ones((4, 3))
    >>> loss = lambda p: jnp.sum(rj.scan(cell, p, xs[:, None])[1][:, 0] * dys)
    >>> want = jax.grad(loss)(params)
    >>> got = rj.reference.reference_elman_grads(params, xs, jnp.zeros(3), dys)
    >>> all(bool(jnp.allclose(g, w, atol=1e-5)) for g, w in zip(got, want))
    True
  """
  act = ACTIVATIONS[activation]
  f, fprime = act.fn, act.grad_from_output
  W = params.w_h.T  # the lecture's W
  T = xs.shape[0]
  hs, h = [h0], h0
  for t in range(T):  # forward, keep every h
    h = f(xs[t] @ params.w_x + h @ params.w_h + params.b)
    hs.append(h)
  d = [fprime(hs[t + 1]) for t in range(T)]  # f'(z_t) from h_t
  jac = [d[t][:, None] * W for t in range(T)]  # ∂h_t/∂h_{t-1}, [H, H]
  gW = jnp.zeros_like(W)
  gV = jnp.zeros_like(params.w_x.T)
  gb = jnp.zeros_like(params.b)
  for t in range(T):  # Σ over losses L_t
    prod = jnp.eye(W.shape[0], dtype=W.dtype)  # Π_{j=i+1}^{t} ∂h_j/∂h_{j-1}
    for i in range(t, -1, -1):  # Σ over i ≤ t
      g = dys[t] @ prod  # ∂L_t/∂h_i (row vector)
      gz = g * d[i]  # through f at step i
      gW = gW + jnp.outer(gz, hs[i])  # ∂⁺h_i/∂W_{ab} = f' δ h_{i-1}
      gV = gV + jnp.outer(gz, xs[i])
      gb = gb + gz
      prod = prod @ jac[i]
  return type(params)(w_x=gV.T, w_h=gW.T, b=gb)

"""`rnnjax.scan`: run a cell over a sequence.

One entry point for every cell: it checks the call (at trace time, before any
compute), hoists the input projection out of the loop, masks padding by
``lengths``, reverses each sequence inside its own length, and dispatches to a
backward mode:

* ``"bptt"``: the hand-written BPTT (`rnnjax.bptt_scan`), the default;
* ``"autodiff"``: ``jax.grad`` through ``lax.scan`` of the same kernel;
* ``"checkpoint"``: autodiff with rematerialisation in chunks of
  ``checkpoint_every`` steps (default ``ceil(sqrt(T))``), so the stored
  activations grow like ``T/k + k·(per-step)`` = O(√T) instead of O(T).

``kernel="pallas"`` runs the time loop instead as one Pallas launch each way
(`rnnjax._src.pallas_rnn`), with its own hand-written backward.

Empty inputs (``T = 0`` or ``B = 0``) follow ``lax.scan``: empty outputs and
the initial carry, with zero gradients for the params and the inputs.

Episode resets (``resets``, haiku's ``ResetCore``) run concatenated episodes in
one scan: the kernel replaces the carry by the cell's initial carry (or
``reset_carry``) before each marked step, whatever carry the scan started from,
and every backward mode stops the gradient there and sends it to
``reset_carry`` instead.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src import arguments, bptt, cpu_kernel, pallas_rnn
from rnnjax._src import kernel as xla_kernel  # `kernel` is scan's argument
from rnnjax._src.cells.base import Cell, compute_dtypes, field
from rnnjax._src.cells.base import input_size as declared_input_size
from rnnjax._src.typing import Array, Carry, Params

Backward = Literal["auto", "bptt", "autodiff", "checkpoint"]
BACKWARDS = ("auto", "bptt", "autodiff", "checkpoint")


def scan(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry | None = None,
  *,
  lengths: Array | None = None,
  resets: Array | None = None,
  reset_carry: Carry | None = None,
  reverse: bool = False,
  unroll: int = 1,
  time_major: bool = True,
  backward: Backward = "auto",
  checkpoint_every: int | None = None,
  kernel: pallas_rnn.Kernel = "auto",
) -> tuple[Carry, Array]:
  """Run ``cell`` over ``xs`` and return ``(carry, ys)``.

  Every argument is checked while tracing, before any compute. The params
  are checked against ``jax.eval_shape(cell.init, key, I)``: every leaf the
  cell's init makes must be present, at the same path and with the same
  shape (dtypes are free). Params may be another NamedTuple type with those
  fields and carry extra leaves of their own (which then get the gradient
  autodiff gives them); only params of the very type that the cell's init
  returns must hold nothing more (this catches, e.g., ``reset="after"`` GRU
  params given to a ``reset="before"`` GRU).

  Args:
    cell: a `rnnjax.Cell` (``rj.elman``, ``rj.gru``, ``rj.lstm``); static to
      JAX, so a jitted function may take it as an ordinary argument
      (``jax.jit(rj.scan)(cell, params, xs)``).
    params: the cell's params, from ``cell.init(key, I)``.
    xs: ``[T, B, I]`` floating inputs (``[B, T, I]`` with ``time_major=False``).
    carry: the initial carry for batch ``B`` (default zeros).
    lengths: optional ``[B]`` ints in ``[0, T]``. Outputs past a length are
      zeros and the returned carry is the carry after each sequence's last
      valid step. Inputs past a length (the padding) are replaced by zeros
      before the cell sees them, so a NaN or Inf there reaches neither a value
      nor a gradient (``xs``' gradient is zero there). Concrete lengths
      outside ``[0, T]`` raise; traced ones (under ``jit``) are clipped to
      ``[0, T]``, or reported under ``jax.experimental.checkify`` with
      ``errors=checkify.user_checks`` (docs/reliability.md).
    resets: optional ``[T, B]`` bool (``[B, T]`` with ``time_major=False``),
      True where an episode starts, as haiku's ``ResetCore``: ``resets[t, b]``
      restarts sequence b before step t from the cell's initial carry
      (``cell.initial_carry((B,))``, zeros for the built-in cells) or from
      ``reset_carry``, whatever carry the scan started from: ``carry`` is
      where the first episode resumes (e.g. the state a previous rollout
      segment ended in), and every later episode starts afresh, as if run
      alone. No gradient flows across a reset into the steps before it.
      Episodes are read in
      the original time order whatever ``reverse`` is: with ``reverse=True``
      each episode runs backwards from its last step to its first (the carry
      is reset before the last step of each episode) and the returned carry
      is the first episode's; without it the returned carry is the last
      episode's. So both directions of `rnnjax.bidirectional` see the same
      episodes. Flags on padding (``t >= lengths[b]``) change nothing; a
      flag at ``t = 0`` restarts the first episode too (as ``ResetCore``
      does), so ``carry`` is then not used for that sequence (with
      ``reverse`` it changes nothing). From RL ``dones`` (episode ended at
      t): ``resets[t] = dones[t - 1]``, and ``resets[0]`` = the previous
      segment's last ``done``.
    reset_carry: what a reset restores instead of the cell's initial carry:
      a carry for batch ``B`` (leaves ``[B, ...]``) or one for a single
      sequence (leaves without the batch axis, broadcast over ``B``), e.g. a
      learned initial state; its gradient sums over every reset. Used only
      with ``resets``.
    reverse: run each sequence backwards (inside its length when ``lengths``
      is given). ``ys[t]`` still belongs to ``xs[t]``.
    unroll: ``lax.scan`` unroll factor (positive int).
    time_major: ``xs`` and ``ys`` are ``[T, B, ·]`` (default) or ``[B, T, ·]``.
    backward: ``"auto"`` (= ``"bptt"``), ``"bptt"``, ``"autodiff"`` or
      ``"checkpoint"``; all give the same values and gradients.
    checkpoint_every: chunk length of ``"checkpoint"`` (default ⌈√T⌉); a
      positive int, checked whenever it is given.
    kernel: what runs the time loop: ``"xla"`` (a ``lax.scan``), ``"pallas"``
      (one Pallas launch for the whole loop and one for its hand-written
      backward, `rnnjax.lstm`, `rnnjax.gru` and `rnnjax.elman` only, no
      ``resets``, ``backward`` ``"auto"`` or ``"bptt"``; ``unroll`` does not
      apply) or ``"auto"`` (default), which picks ``"pallas"`` only where a GPU
      measurement showed it faster and is ``"xla"`` everywhere until one has
      (``benchmarks/bench_pallas.py``). Away from a GPU ``"pallas"`` runs in
      Pallas interpret mode: correct, but slow. ``"ffi"``: the C++ CPU kernel
      (`rnnjax._src.cpu_kernel`, compiled by ``pip install`` where a C++
      compiler is found), for the same cells (`rnnjax.gru` with
      ``reset="after"`` only) under the same rules, in float32 or float64;
      ``"auto"`` picks it only where ``benchmarks/bench_ffi.py`` measured it
      faster (`rnnjax._src.cpu_kernel.AUTO_WINS`).

  Returns:
    ``(carry, ys)``: the carry after each sequence's last valid step (leaves
    ``[B, H]``) and the outputs ``ys: [T, B, H]`` (or ``[B, T, H]``).

    Empty inputs are allowed, as in ``lax.scan``: with ``T = 0`` the result
    is the initial carry and ``ys`` of shape ``[0, B, H]``; with ``B = 0``
    the empty carry and ``ys: [T, 0, H]``. Every backward mode then gives
    zero gradients for ``params`` and ``xs``, and passes the carry's
    gradient straight through to the initial carry.

  Raises:
    TypeError: ``cell`` is not a `rnnjax.Cell`, ``xs`` is not floating
      point, ``lengths`` are not integers, or ``resets`` are not bool.
    ValueError: a shape, an option or a concrete length does not fit (``kernel="pallas"``
      with a cell, ``backward`` or ``resets`` it does not support), or ``params``
      do not fit the cell (a leaf of ``cell.init(key, I)`` is missing or has
      another shape); the message names the argument and the fix.

  Examples:
    >>> import jax, rnnjax as rj
    >>> cell = rj.lstm(8)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> carry, ys = rj.scan(cell, params, jax.numpy.ones((5, 2, 3)))
    >>> ys.shape, carry.h.shape
    ((5, 2, 8), (2, 8))
    >>> carry, ys = jax.jit(rj.scan)(cell, params, jax.numpy.ones((5, 2, 3)))
    >>> carry, ys = rj.scan(cell, params, jax.numpy.ones((0, 2, 3)))  # T = 0
    >>> ys.shape, carry.h.shape
    ((0, 2, 8), (2, 8))

    With a reset before step 2, steps 2-3 rerun steps 0-1 (the same inputs)
    from the cell's zero carry, whatever carry the scan started from:

    >>> resets = jax.numpy.array([[False], [False], [True], [False]])
    >>> _, ys = rj.scan(cell, params, jax.numpy.ones((4, 1, 3)), resets=resets)
    >>> bool(jax.numpy.allclose(ys[2:], ys[:2]))
    True
    >>> c0 = rj.LSTMCarry(h=jax.numpy.ones((1, 8)), c=jax.numpy.ones((1, 8)))
    >>> _, ys_c0 = rj.scan(cell, params, jax.numpy.ones((4, 1, 3)), c0, resets=resets)
    >>> bool(jax.numpy.allclose(ys_c0[2:], ys[:2])), bool(jax.numpy.allclose(ys_c0[:2], ys[:2]))
    (True, False)
  """
  if not isinstance(cell, Cell):
    raise TypeError(
      f"rnnjax.scan: cell must be an rnnjax Cell (e.g. rj.lstm(H)), got {type(cell).__name__}"
    )
  if backward not in BACKWARDS:
    raise ValueError(f"rnnjax.scan: unknown backward {backward!r}; expected one of {BACKWARDS}")
  arguments.positive_int("unroll", unroll, "rnnjax.scan")
  if checkpoint_every is not None:
    arguments.positive_int("checkpoint_every", checkpoint_every, "rnnjax.scan")
  xs = check_inputs(cell, params, xs, time_major, "rnnjax.scan")
  check_params(cell, params, xs.shape[-1], "rnnjax.scan")
  if not time_major:
    xs = jnp.swapaxes(xs, 0, 1)
  T, B, _ = xs.shape
  carry = check_carry(cell, params, xs, carry, B, "rnnjax.scan")
  mask = None
  if lengths is not None:
    lengths = arguments.lengths(lengths, T, B, "rnnjax.scan")
    mask = jnp.arange(T)[:, None] < lengths[None, :]  # [T, B]
    xs = mask_padding(xs, mask)
  if resets is not None:
    resets = check_resets(resets, T, B, time_major, "rnnjax.scan")
    reset_carry = check_reset_carry(cell, params, xs, carry, reset_carry, B, "rnnjax.scan")
  elif reset_carry is not None:
    raise ValueError(
      "rnnjax.scan: reset_carry is given without resets; it is what a reset restores, so "
      "pass resets=[T, B] bool as well (the starting carry is the carry argument)"
    )
  pallas = pallas_rnn.use_pallas(kernel, cell, backward, resets is not None, B, "rnnjax.scan")
  ffi = not pallas and cpu_kernel.use_ffi(
    kernel, cell, params, xs, backward, resets is not None, "rnnjax.scan"
  )
  if T == 0 or B == 0:
    return _empty(cell, params, xs, carry, time_major)
  if reverse:
    xs = _flip(xs, lengths)
  if resets is not None:
    resets = processing_resets(resets, mask, lengths, reverse)

  mode = "bptt" if backward == "auto" else backward
  if pallas:
    carry, ys = pallas_rnn.pallas_scan(cell, params, xs, carry, mask)
  elif ffi:
    carry, ys = cpu_kernel.ffi_scan(cell, params, xs, carry, mask)
  elif mode == "bptt":
    carry, ys = bptt.bptt_scan(cell, unroll, params, xs, carry, mask, resets, reset_carry)
  elif mode == "autodiff":
    zx = cell.project(params, xs)  # [T, B, kH]
    carry, ys = xla_kernel.forward(
      cell, params, zx, carry, mask, unroll, resets=resets, reset_carry=reset_carry
    )
  else:
    k = max(1, math.ceil(math.sqrt(T))) if checkpoint_every is None else checkpoint_every
    carry, ys = _checkpointed(cell, params, xs, carry, mask, unroll, k, resets, reset_carry)

  if reverse:
    ys = _flip(ys, lengths)
  if not time_major:
    ys = jnp.swapaxes(ys, 0, 1)
  return carry, ys


def mask_padding(xs: Array, mask: Array) -> Array:
  """``xs: [T, B, ...]`` with zeros past each length (``mask: [T, B]``, True on
  valid steps).

  The first half of the double-``where`` rule: the padding never reaches the
  cell, so a NaN or Inf there (uninitialised memory, a NaN marker) cannot
  reach a gradient through ``0 * NaN`` in a step's backward; the kernel's
  ``where`` on the carry and the outputs is the second half. The gradient of
  ``xs`` is zero on padding. One select over ``xs``, before the hoisted input
  projection; not called without ``lengths``.
  """
  return jnp.where(xla_kernel.rows(mask, xs), xs, jnp.zeros((), xs.dtype))


def flip(xs: Array, lengths: Array | None = None) -> Array:
  """Reverse ``xs: [T, B, ...]`` in time, each sequence inside its length.

  Positions past a length stay where they are. The map is its own inverse.
  ``lengths`` follow `rnnjax.scan`'s rule: outside ``[0, T]`` they raise when
  concrete and are clipped to ``[0, T]`` under ``jit`` (a length above T
  flips the whole sequence, a negative one leaves it in place).

  Args:
    xs: ``[T, B, ...]``.
    lengths: optional ``[B]`` valid lengths.

  Returns:
    The flipped ``[T, B, ...]`` array.

  Raises:
    TypeError: ``lengths`` are not integers.
    ValueError: ``lengths`` given with ``xs`` of rank below 2, ``lengths`` not
      of shape ``[B]``, or concrete ``lengths`` outside ``[0, T]``.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> xs = jnp.arange(4.0).reshape(4, 1, 1) * jnp.ones((1, 2, 1))
    >>> rj.flip(xs, jnp.array([4, 2]))[:, :, 0].T.tolist()
    [[3.0, 2.0, 1.0, 0.0], [1.0, 0.0, 2.0, 3.0]]
  """
  if lengths is None:
    return xs[::-1]
  if jnp.ndim(xs) < 2:
    raise ValueError(
      f"rnnjax.flip: with lengths, xs must be [T, B, ...] (rank >= 2), got shape "
      f"{tuple(jnp.shape(xs))}; add a batch axis (xs[:, None]) and one length per sequence"
    )
  T, B = jnp.shape(xs)[:2]
  return _flip(xs, arguments.lengths(lengths, T, B, "rnnjax.flip"))


def _flip(xs: Array, lengths: Array | None) -> Array:
  """`flip` for lengths already checked (and clipped) by ``arguments.lengths``."""
  if lengths is None:
    return xs[::-1]
  T = xs.shape[0]
  t = jnp.arange(T)[:, None]  # [T, 1]
  idx = jnp.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # [T, B]
  idx = idx.reshape(idx.shape + (1,) * (xs.ndim - 2))
  return jnp.take_along_axis(xs, idx, axis=0)


def processing_resets(
  resets: Array, mask: Array | None, lengths: Array | None, reverse: bool
) -> Array:
  """``resets: [T, B]`` (episode starts, original order) as the kernel's flags:
  in processing order, True before each step that starts from the initial carry.

  Flags on padding are dropped. With ``reverse`` an episode ``[s, e]`` runs from
  ``e`` down to ``s``, so the reset falls before ``e``, the step before the next
  episode's start: the flags move back one step, then flip with the inputs.
  """
  r = resets if mask is None else resets & mask
  if reverse:
    r = jnp.concatenate([r[1:], jnp.zeros_like(r[:1])])  # r[t] = start at t + 1
    r = flip(r, lengths)
  return r


def _checkpointed(
  cell: Cell,
  params: Params,
  xs: Array,
  carry: Carry,
  mask: Array | None,
  unroll: int,
  k: int,
  resets: Array | None = None,
  reset_carry: Carry | None = None,
) -> tuple[Carry, Array]:
  """The kernel in chunks of k steps; each chunk (projection included) is
  recomputed in the backward pass, so only chunk-boundary carries are stored.
  A reset inside any chunk restores ``reset_carry`` (default: the carry the
  whole scan started from), not the chunk's starting carry."""
  T, B, I = xs.shape
  n = -(-T // k)
  pad = n * k - T
  valid = jnp.ones((T, B), bool) if mask is None else mask
  xs_c = jnp.pad(xs, ((0, pad), (0, 0), (0, 0))).reshape(n, k, B, I)
  m_c = jnp.pad(valid, ((0, pad), (0, 0))).reshape(n, k, B)
  r_c = None if resets is None else jnp.pad(resets, ((0, pad), (0, 0))).reshape(n, k, B)
  carry0 = carry if reset_carry is None else reset_carry

  @jax.checkpoint
  def chunk(c: Carry, inp: tuple[Array, Array, Array | None]) -> tuple[Any, ...]:
    x, m, r = inp
    zx = cell.project(params, x)  # [k, B, kH]
    return xla_kernel.forward(cell, params, zx, c, m, unroll, resets=r, reset_carry=carry0)

  carry, ys = lax.scan(chunk, carry, (xs_c, m_c, r_c))  # ys: [n, k, B, ...]
  return carry, ys.reshape(n * k, *ys.shape[2:])[:T]


def _empty(
  cell: Cell, params: Params, xs: Array, carry: Carry, time_major: bool
) -> tuple[Carry, Array]:
  """``T = 0`` or ``B = 0``: the initial carry and empty outputs, as ``lax.scan``.

  The output's size and dtype are those of one kernel step, found by
  ``jax.eval_shape`` (no compute). ``params`` and ``xs`` do not reach the
  outputs, so their gradients are zeros; the carry's passes straight through.
  """
  T, B, I = xs.shape

  def one_step(p: Params, x: Array, c: Carry) -> tuple[Any, ...]:
    return xla_kernel.forward(cell, p, cell.project(p, x), c, None)

  step_carry, y = jax.eval_shape(one_step, params, jax.ShapeDtypeStruct((1, B, I), xs.dtype), carry)
  carry = jax.tree.map(lambda c, s: c.astype(s.dtype), carry, step_carry)
  shape = (T, B, *y.shape[2:]) if time_major else (B, T, *y.shape[2:])
  return carry, jnp.zeros(shape, y.dtype)


# ---------------------------------------------------------------- checks


def check_inputs(cell: Cell, params: Params, xs: Any, time_major: bool, what: str) -> Array:
  """Rank, dtype and feature size of ``xs``; returns it as a jax array."""
  if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
    xs = jnp.asarray(xs)
  if not jnp.issubdtype(xs.dtype, jnp.floating):
    kind = "integer" if jnp.issubdtype(xs.dtype, jnp.integer) else str(xs.dtype)
    raise TypeError(
      f"{what}: xs must be floating point, got {kind} dtype {xs.dtype} "
      f"(xs.shape={tuple(xs.shape)}); token ids go through rj.embedding first, "
      f"other data through xs.astype(jnp.float32)"
    )
  layout = "[T, B, I]" if time_major else "[B, T, I]"
  if xs.ndim != 3:
    raise ValueError(
      f"{what}: xs must have rank 3 {layout}, got rank {xs.ndim} with shape "
      f"{tuple(xs.shape)}; add a batch axis (xs[:, None] for one sequence) or "
      f"jax.vmap over extra axes"
    )
  input_size = declared_input_size(cell, params, what)
  if input_size is not None and xs.shape[-1] != input_size:
    raise ValueError(
      f"{what}: xs has feature size {xs.shape[-1]} but params expect input_size "
      f"{input_size} (xs.shape={tuple(xs.shape)}, layout {layout}); init the cell "
      f"with cell.init(key, {xs.shape[-1]}) or fix the inputs"
    )
  return xs


def check_resets(resets: Any, T: int, B: int, time_major: bool, what: str) -> Array:
  """``resets``: bool ``[T, B]`` (``[B, T]`` with ``time_major=False``); returns
  them time-major as a jax array."""
  if not hasattr(resets, "shape") or not hasattr(resets, "dtype"):
    resets = jnp.asarray(resets)
  shape = tuple(resets.shape)
  layout, want = ("[T, B]", (T, B)) if time_major else ("[B, T]", (B, T))
  if resets.dtype != jnp.bool_:
    raise TypeError(
      f"{what}: resets must be bool (True where an episode starts), got dtype "
      f"{resets.dtype} with shape {shape}; pass resets.astype(bool) (from RL dones, "
      f"resets[t] = dones[t - 1])"
    )
  if shape != want:
    hint = (
      f"; it looks transposed: with time_major={time_major} resets are laid out "
      f"like xs, {layout}, so pass resets.T"
      if shape == want[::-1]
      else ""
    )
    raise ValueError(
      f"{what}: resets must have shape {layout} = {want} to match xs "
      f"(time_major={time_major}), got {shape}; one flag per step and sequence{hint}"
    )
  return resets if time_major else jnp.swapaxes(resets, 0, 1)


@functools.lru_cache(maxsize=128)
def _init_shapes(cell: Cell, input_size: int) -> Params:
  """``jax.eval_shape`` of ``cell.init(key, input_size)``, cached per cell."""
  try:
    return jax.eval_shape(lambda: cell.init(jax.random.key(0), input_size))
  except Exception as e:
    e.add_note(
      f"(raised by {cell!r}.init(key, {input_size}), which rnnjax.scan evaluates "
      f"abstractly to check the params against the cell)"
    )
    raise


def _path(path: Any) -> str:
  return jax.tree_util.keystr(path) or "<root>"


def check_params(cell: Cell, params: Params, input_size: int, what: str) -> None:
  """Fail at trace time when ``params`` do not fit ``cell`` with ``input_size``.

  Compares the leaves of ``jax.eval_shape(cell.init, key, input_size)`` with
  those of ``params`` by path (``.w_x``, ``.b_hn``, ...): each must exist with
  the same shape. The tree types are compared loosely: another NamedTuple
  with those fields passes, and extra leaves are allowed, unless ``params``
  have the very type the cell's init returns.
  """
  try:
    expected = _init_shapes(cell, input_size)
  except TypeError as e:  # an unhashable cell: no cache
    if "unhashable" not in str(e):
      raise
    expected = _init_shapes.__wrapped__(cell, input_size)
  want = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(expected)[0]}
  got = {_path(p): leaf for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  got_type, want_type = type(params).__name__, type(expected).__name__
  fix = (
    f"pass params from cell.init(key, {input_size}) of this same cell ({input_size} is the "
    f"feature size of xs, its last axis)"
  )
  for path, w in want.items():
    if path not in got:
      raise ValueError(
        f"{what}: params do not fit {cell!r}: the cell's {want_type} has a leaf {path} "
        f"of shape {tuple(w.shape)} that the given {got_type} lacks (its leaves: "
        f"{', '.join(sorted(got)) or 'none'}); {fix}"
      )
    shape = tuple(jnp.shape(got[path]))
    if shape != tuple(w.shape):
      raise ValueError(
        f"{what}: params do not fit {cell!r} with input_size {input_size}: leaf {path} of "
        f"the given {got_type} has shape {shape}, but the cell's {want_type} needs "
        f"{tuple(w.shape)}; {fix}"
      )
  extra = sorted(set(got) - set(want))
  if extra and type(params) is type(expected):
    raise ValueError(
      f"{what}: params do not fit {cell!r}: the given {got_type} has leaves "
      f"{', '.join(extra)} that this cell's init does not make (and its step would "
      f"ignore); {fix}"
    )


def check_reset_carry(
  cell: Cell, params: Params, xs: Array, carry: Carry, reset_carry: Carry | None, B: int, what: str
) -> Carry:
  """What a reset restores, with leaves ``[B, ...]`` in the carry's dtypes:
  ``cell.initial_carry((B,))`` by default, else ``reset_carry`` (batched, or
  one sequence's, broadcast over ``B``)."""
  dtypes = [c.dtype for c in jax.tree.leaves(carry)]
  if reset_carry is None:
    leaves, tree = jax.tree.flatten(cell.initial_carry((B,), dtypes[0] if dtypes else jnp.float32))
    return jax.tree.unflatten(tree, [a.astype(d) for a, d in zip(leaves, dtypes, strict=True)])
  got_struct: Any = jax.tree.structure(reset_carry)
  exp_struct: Any = jax.tree.structure(carry)
  if got_struct != exp_struct:
    raise ValueError(
      f"{what}: reset_carry has structure {got_struct} but {cell!r} expects {exp_struct}; "
      f"use cell.initial_carry(({B},)) (or cell.initial_carry(()) for one state shared by "
      f"every sequence)"
    )
  out = []
  for got, want in zip(jax.tree.leaves(reset_carry), jax.tree.leaves(carry), strict=True):
    shape = tuple(jnp.shape(got))
    if shape == tuple(want.shape[1:]):  # one sequence's state, shared by the batch
      got = jnp.broadcast_to(got, want.shape)
    elif shape != tuple(want.shape):
      raise ValueError(
        f"{what}: reset_carry leaf has shape {shape} but batch B={B} and hidden_size "
        f"H={cell.hidden_size} need {tuple(want.shape)} (or {tuple(want.shape[1:])}, shared "
        f"by every sequence); use cell.initial_carry(({B},))"
      )
    out.append(jnp.asarray(got).astype(want.dtype))
  return jax.tree.unflatten(jax.tree.structure(carry), out)


def check_carry(
  cell: Cell, params: Params, xs: Array, carry: Carry | None, B: int, what: str
) -> Carry:
  """Default zeros, else the structure and shapes of ``cell.initial_carry((B,))``."""
  like = (
    [field(params, cell.input_weight, what, "input_weight")]
    if cell.input_weight is not None
    else jax.tree.leaves(params)
  )
  cdt, _ = compute_dtypes(cell.dtype, xs, *like)
  expected = cell.initial_carry((B,), cdt)
  if carry is None:
    return expected
  # Any: jaxlib defines PyTreeDef in a compiled module without a stub, so mypy
  # cannot see its comparison operators.
  got_struct: Any = jax.tree.structure(carry)
  exp_struct: Any = jax.tree.structure(expected)
  if got_struct != exp_struct:
    raise ValueError(
      f"{what}: carry has structure {got_struct} but {cell!r} "
      f"expects {exp_struct}; use cell.initial_carry(({B},))"
    )
  for got, want in zip(jax.tree.leaves(carry), jax.tree.leaves(expected), strict=True):
    if tuple(got.shape) != tuple(want.shape):
      raise ValueError(
        f"{what}: carry leaf has shape {tuple(got.shape)} but batch B={B} and "
        f"hidden_size H={cell.hidden_size} need {tuple(want.shape)}; use "
        f"cell.initial_carry(({B},))"
      )
  return jax.tree.map(lambda c: jnp.asarray(c).astype(cdt), carry)

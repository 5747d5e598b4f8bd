"""A Pallas persistent-RNN kernel: the whole time loop in one launch.

`rnnjax.scan(..., kernel="pallas")` runs here. Only the sequential part moves
into Pallas; the input projection and the weight gradients stay large XLA
matmuls, as in `rnnjax.bptt_scan`. Data flow (time-major; ``G`` gate blocks):

    zx = project(params, xs)            # [T, B, G·H], one matmul, bias included
    zx --pad--> [T, Bp, G·Hp]           # each gate block padded on its own
    forward pallas_call, grid over blocks of Bb = 16 sequences:
      w_h [Hp, G·Hp] read once per launch (resident) or once per step (L2),
      carry (h, c) in registers, for t in 0..T-1 (a fori_loop in the kernel):
        z_k = zx[t, :, k] + h_{t-1} @ w_h[:, k]       # f32 accumulation
        carry_t = mask[t] ? step(carry_{t-1}, z) : carry_{t-1}
        hs[t] = h_t  (and, for the backward, c_t and the gate activations)
    backward pallas_call, the same grid, t = T-1..0:
        dZx[t], dZh[t], dcarry_{t-1} from dcarry_t + dys[t]   # the cell's local backward
    dw_h = H_prevᵀ dZh                   # one matmul over all T·Bp rows, outside

Padding is for Triton, which needs power-of-two block shapes and ``tl.dot``
operands of at least 16 x 16: ``Hp = max(16, 2^⌈log2 H⌉)`` and ``Bp`` a
multiple of 16. Padded hidden units start at zero and meet zero rows of
``w_h``, so they never reach a real unit; padded sequences are masked.

The math is that of `rnnjax.lstm`, `rnnjax.gru` (``reset="before"`` and
``"after"``) and `rnnjax.elman`, in their gate order and row-vector layout;
those docstrings carry the equations. The reference is `rnnjax.scan` with
``kernel="xla"``, and ``tests/test_pallas.py`` holds the two equal (values
and gradients, with lengths and reverse) in Pallas interpret mode on the CPU.

Away from a GPU the kernels run in interpret mode: correct, but slow (each
kernel op is a separate XLA op inside a while loop).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._src.cells.base import Cell, compute_dtypes, field, recurrent_weight
from rnnjax._src.cells.tiles import Blocks, Rule
from rnnjax._src.typing import Array, Carry, Params

if TYPE_CHECKING:  # Pallas is imported only when a kernel launches
  from jax.experimental import pallas as pl

Kernel = Literal["auto", "xla", "pallas", "ffi"]
KERNELS = ("auto", "xla", "pallas", "ffi")  # "ffi": rnnjax._src.cpu_kernel
SUPPORTED = ("lstm", "gru", "elman")
"""The cells whose factories declare a Pallas `Rule` (for messages)."""

BLOCK_B = 16
"""Sequences per program: Triton's ``tl.dot`` needs M >= 16."""
RESIDENT_BYTES = 64 * 1024
"""``w_h`` (padded, compute dtype) up to this size is loaded once per launch and
held on chip for the whole loop; a larger one is re-read every step (from L2).
A starting point, not a measurement: ``benchmarks/bench_pallas.py`` times both."""


def padded(n: int) -> int:
  """``n`` rounded up to a power of two, at least 16 (Triton's block rules).

  Examples:
    >>> from rnnjax._src.pallas_rnn import padded
    >>> [padded(n) for n in (1, 6, 16, 100, 512)]
    [16, 16, 16, 128, 512]
  """
  return 1 << max(4, (n - 1).bit_length())


def rule_for(cell: Cell) -> Rule | None:
  """The kernels' rule for ``cell``: the one its factory declared in its compiled
  form (`rnnjax.elman`, `rnnjax.gru` and `rnnjax.lstm` do), or None."""
  rule = cell.compiled.pallas
  return rule if isinstance(rule, Rule) else None


# ----------------------------------------------------------------- the kernels


class Config(NamedTuple):
  """The static choices of one launch (hashable: a ``custom_vjp`` static arg)."""

  rule: Rule
  cdt: Any  # compute dtype of the matmuls and the carry
  acc: Any  # accumulation dtype (float32 for 16-bit compute)
  Hp: int  # padded hidden size
  resident: bool  # w_h loaded once per launch (else once per step)
  interpret: bool  # Pallas interpret mode (no GPU)
  num_warps: int


def _split(refs: Sequence[Any], sizes: Sequence[int]) -> list[list[Any]]:
  """``refs`` cut into consecutive groups of ``sizes``."""
  out, i = [], 0
  for n in sizes:
    out.append(list(refs[i : i + n]))
    i += n
  assert i == len(refs), (i, len(refs))
  return out


def _tiles(ref: Any, t: Any, n: int, Hp: int) -> list[Array]:
  """The ``n`` tiles ``ref[t, :, k·Hp:(k+1)·Hp]`` (``t=None``: ``ref[:, k·Hp:(k+1)·Hp]``)."""
  if t is None:
    return [ref[:, k * Hp : (k + 1) * Hp] for k in range(n)]
  return [ref[t, :, k * Hp : (k + 1) * Hp] for k in range(n)]


def _store(ref: Any, t: Any, tiles: Blocks, Hp: int) -> None:
  for k, v in enumerate(tiles):
    ref[t, :, k * Hp : (k + 1) * Hp] = v.astype(ref.dtype)


def _forward_kernel(cfg: Config, T: int, keep: bool, *refs: Any) -> None:
  """One program: ``Bb`` sequences through all T steps.

  Refs: ``w_h [Hp, G·Hp]`` and ``b_hn [1, Hp]`` (whole), ``zx [T, Bb, G·Hp]``,
  ``mask [T, Bb, 1]`` int32, the initial carry's leaves ``[Bb, Hp]``; out:
  ``hs [T, Bb, Hp]`` (the held ``h_t``), the last carry's leaves and, with
  ``keep``, the other leaves per step ``[T, Bb, (L-1)·Hp]`` and the
  residuals ``[T, Bb, R·Hp]``.
  """
  rule, Hp, cdt, acc = cfg.rule, cfg.Hp, cfg.cdt, cfg.acc
  L, R = rule.leaves, rule.residuals
  more, kept = (int(keep and L > 1), int(keep and R > 0))
  (w_ref, bhn_ref, zx_ref, mask_ref), c0, (hs_ref,), cT, st, rs = _split(
    refs, (4, L, 1, L, more, kept)
  )
  resident = _tiles(w_ref, None, rule.gates, Hp) if cfg.resident else None
  b_hn = bhn_ref[...]

  def body(t: Array, carry: Blocks) -> Blocks:
    w = resident if resident is not None else _tiles(w_ref, None, rule.gates, Hp)
    zx = [z.astype(acc) for z in _tiles(zx_ref, t, rule.gates, Hp)]
    new, res = rule.forward(w, b_hn, carry, zx, cdt, acc)
    m = mask_ref[t] != 0  # [Bb, 1]
    new = [jnp.where(m, a, b) for a, b in zip(new, carry, strict=True)]  # hold past a length
    hs_ref[t] = new[0]
    if st:
      _store(st[0], t, new[1:], Hp)
    if rs:
      _store(rs[0], t, res, Hp)
    return new

  last = lax.fori_loop(jnp.int32(0), jnp.int32(T), body, [r[...] for r in c0])
  for ref, v in zip(cT, last, strict=True):
    ref[...] = v


def _backward_kernel(cfg: Config, T: int, split_dzh: bool, *refs: Any) -> None:
  """One program, t = T-1 .. 0: the cell's local backward with the carry's
  cotangent in registers.

  Refs: ``w_h``, ``b_hn``, ``mask``, the initial carry's leaves, ``hs``, the
  other leaves per step, the residuals, ``dys [T, Bb, Hp]``, the last carry's
  cotangent leaves; out: ``dzx [T, Bb, G·Hp]``, ``dzh`` (only where it differs
  from ``dzx``) and the initial carry's cotangent leaves.
  """
  rule, Hp, cdt, acc = cfg.rule, cfg.Hp, cfg.cdt, cfg.acc
  L, R, G = rule.leaves, rule.residuals, rule.gates
  (w_ref, bhn_ref, mask_ref), c0, (hs_ref,), st, rs, (dys_ref,), dT, (dzx_ref,), dzh, d0 = _split(
    refs, (3, L, 1, int(L > 1), int(R > 0), 1, L, 1, int(split_dzh), L)
  )
  resident = _tiles(w_ref, None, G, Hp) if cfg.resident else None
  b_hn = bhn_ref[...]

  def carry_at(t: Array) -> list[Array]:
    return [hs_ref[t]] + (_tiles(st[0], t, L - 1, Hp) if st else [])

  def body(s: Array, d: Blocks) -> Blocks:
    t = T - 1 - s
    w = resident if resident is not None else _tiles(w_ref, None, G, Hp)
    prev = [
      jnp.where(t > 0, a, b0[...]).astype(acc)  # carry_{t-1}, carry_0 at t = 0
      for a, b0 in zip(carry_at(jnp.maximum(t - 1, 0)), c0, strict=True)
    ]
    cur = [a.astype(acc) for a in carry_at(t)]
    res = [a.astype(acc) for a in _tiles(rs[0], t, R, Hp)] if rs else []
    d = [d[0] + dys_ref[t].astype(acc), *d[1:]]  # y_t = h_t
    d_prev, dzx, dzh_t = rule.backward(w, b_hn, prev, cur, res, d, cdt, acc)
    m = mask_ref[t] != 0  # padding: ∂L/∂carry passes through, no gradient from the step
    zero = jnp.zeros_like(d[0])
    _store(dzx_ref, t, [jnp.where(m, a, zero) for a in dzx], Hp)
    if dzh:
      _store(dzh[0], t, [jnp.where(m, a, zero) for a in dzh_t], Hp)
    return [jnp.where(m, a, b) for a, b in zip(d_prev, d, strict=True)]

  first = lax.fori_loop(jnp.int32(0), jnp.int32(T), body, [r[...].astype(acc) for r in dT])
  for ref, v in zip(d0, first, strict=True):
    ref[...] = v.astype(ref.dtype)


def _batch_spec(shape: tuple[int, ...]) -> pl.BlockSpec:
  """``BLOCK_B`` rows of the batch axis (``ndim - 2``) per program, the rest whole."""
  from jax.experimental import pallas as pl

  axis = len(shape) - 2
  block = tuple(BLOCK_B if a == axis else n for a, n in enumerate(shape))
  return pl.BlockSpec(block, lambda b: tuple(b if a == axis else 0 for a in range(len(shape))))


def _launch(
  cfg: Config,
  kernel: Callable[..., None],
  shared: Sequence[Array],
  blocked: Sequence[Array],
  outs: Sequence[jax.ShapeDtypeStruct],
  name: str,
) -> list[Array]:
  """One ``pallas_call`` over batch blocks: ``shared`` arrays (``w_h``, ``b_hn``)
  whole in every program, ``blocked`` and ``outs`` cut along the batch axis."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as plgpu

  Bp = blocked[0].shape[-2]
  return pl.pallas_call(
    kernel,
    out_shape=list(outs),
    grid=(Bp // BLOCK_B,),
    in_specs=[pl.BlockSpec(a.shape, lambda b, n=a.ndim: (0,) * n) for a in shared]
    + [_batch_spec(a.shape) for a in blocked],
    out_specs=[_batch_spec(o.shape) for o in outs],
    interpret=cfg.interpret,
    compiler_params=plgpu.CompilerParams(num_warps=cfg.num_warps, num_stages=1),
    name=name,
  )(*shared, *blocked)


def _forward(
  cfg: Config,
  w_h: Array,
  b_hn: Array,
  zx: Array,
  carry0: Sequence[Array],
  mask: Array,
  keep: bool,
) -> tuple[Array, list[Array], Array | None, Array | None]:
  """The forward launch: ``(hs, carry_T leaves, other leaves per step, residuals)``."""
  rule, Hp, cdt = cfg.rule, cfg.Hp, cfg.cdt
  T, Bp, _ = zx.shape
  L, R = rule.leaves, rule.residuals

  def sds(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, cdt)

  outs = [sds(T, Bp, Hp)] + [sds(Bp, Hp)] * L
  outs += [sds(T, Bp, (L - 1) * Hp)] if keep and L > 1 else []
  outs += [sds(T, Bp, R * Hp)] if keep and R > 0 else []
  got = _launch(
    cfg,
    functools.partial(_forward_kernel, cfg, T, keep),
    [w_h.astype(cdt), b_hn],
    [zx, mask, *carry0],
    outs,
    "rnn_forward",
  )
  hs, last, rest = got[0], list(got[1 : 1 + L]), list(got[1 + L :])
  states = rest.pop(0) if keep and L > 1 else None
  res = rest.pop(0) if keep and R > 0 else None
  return hs, last, states, res


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(
  cfg: Config, w_h: Array, b_hn: Array, zx: Array, carry0: tuple[Array, ...], mask: Array
) -> tuple[tuple[Array, ...], Array]:
  """The recurrence on the padded layout, with the hand-written backward.

  Args:
    cfg: the static `Config`.
    w_h: ``[Hp, G·Hp]``, each gate block padded.
    b_hn: ``[1, Hp]``, the GRU's ``b_hn`` for ``reset="after"`` (else unused).
    zx: ``[T, Bp, G·Hp]`` in ``cfg.acc``, the projected inputs, bias included.
    carry0: the initial carry's leaves, each ``[Bp, Hp]`` in ``cfg.cdt``.
    mask: ``[T, Bp, 1]`` int32, nonzero on valid steps (a prefix of each row).

  Returns:
    ``(carry_T, hs)``: the carry's leaves after each row's last valid step,
    and ``hs: [T, Bp, Hp]``, the held ``h_t`` (not zeroed on padding).
  """
  hs, last, _, _ = _forward(cfg, w_h, b_hn, zx, carry0, mask, keep=False)
  return tuple(last), hs


def _recurrence_fwd(
  cfg: Config, w_h: Array, b_hn: Array, zx: Array, carry0: tuple[Array, ...], mask: Array
) -> tuple[tuple[tuple[Array, ...], Array], tuple[Any, ...]]:
  hs, last, states, res = _forward(cfg, w_h, b_hn, zx, carry0, mask, keep=True)
  return (tuple(last), hs), (w_h, b_hn, carry0, hs, states, res, mask)


def _recurrence_bwd(
  cfg: Config, residuals: tuple[Any, ...], g: tuple[tuple[Array, ...], Array]
) -> tuple[Array, Array, Array, tuple[Array, ...], None]:
  """The reverse loop in one launch, then the weight gradients as one matmul
  over all ``N = T·Bp`` rows (``dw_h = H_prevᵀ dZh``)."""
  w_h, b_hn, carry0, hs, states, res, mask = residuals
  dlast, dhs = g
  rule, Hp, acc = cfg.rule, cfg.Hp, cfg.acc
  T, Bp, _ = hs.shape
  G, N = rule.gates, T * Bp
  split = rule.split
  rows = jax.ShapeDtypeStruct((T, Bp, G * Hp), acc)
  got = _launch(
    cfg,
    functools.partial(_backward_kernel, cfg, T, split),
    [w_h.astype(cfg.cdt), b_hn],
    [mask, *carry0, hs, *[a for a in (states, res) if a is not None], dhs, *dlast],
    [rows] * (2 if split else 1) + [jax.ShapeDtypeStruct((Bp, Hp), c.dtype) for c in carry0],
    "rnn_backward",
  )
  dzx, dzh, dcarry0 = got[0], got[1] if split else got[0], got[1 + split :]
  h_prev = jnp.concatenate([carry0[0][None], hs[:-1]]).reshape(N, Hp)  # [N, Hp]
  flat_res = None if res is None else res.reshape(N, -1)
  dw_h, db_hn = rule.weight_grads(h_prev.astype(acc), flat_res, dzh.reshape(N, G * Hp), acc)
  db = jnp.zeros_like(b_hn) if db_hn is None else db_hn.reshape(b_hn.shape).astype(b_hn.dtype)
  return dw_h.astype(w_h.dtype), db, dzx, tuple(dcarry0), None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ----------------------------------------------------------------- the entry point


def _pad_gates(a: Array, G: int, H: int, Hp: int, rows: int) -> Array:
  """``a: [..., n, G·H]`` as ``[..., rows, G·Hp]``: each gate block zero-padded
  to Hp columns, and axis -2 zero-padded to ``rows``."""
  *lead, n, _ = a.shape
  a = a.reshape(*lead, n, G, H)
  pad = [(0, 0)] * len(lead) + [(0, rows - n), (0, 0), (0, Hp - H)]
  return jnp.pad(a, pad).reshape(*lead, rows, G * Hp)


def pallas_scan(
  cell: Cell,
  params: Params,
  xs: Array,
  carry0: Carry,
  mask: Array | None,
  *,
  interpret: bool | None = None,
  resident: bool | None = None,
) -> tuple[Carry, Array]:
  """Run a built-in ``cell`` over ``xs`` with the Pallas kernels.

  `rnnjax.scan` calls this for ``kernel="pallas"`` after checking its
  arguments and reversing sequences; call it directly only with inputs
  already in that form. Gradients come from the hand-written backward kernel
  (a ``jax.custom_vjp``), for ``params``, ``xs`` and ``carry0``.

  Args:
    cell: `rnnjax.lstm`, `rnnjax.gru` or `rnnjax.elman`.
    params: the cell's params.
    xs: ``[T, B, I]`` time-major inputs, ``T, B >= 1``.
    carry0: the initial carry for batch B, in the compute dtype.
    mask: ``[T, B]`` bool, True on valid steps (a prefix of each sequence),
      or None when every step is valid.
    interpret: Pallas interpret mode; default: unless JAX's default backend
      is a GPU.
    resident: keep ``w_h`` on chip for the whole loop (else re-read it every
      step); default: when it takes at most `RESIDENT_BYTES`.

  Returns:
    ``(carry_T, ys)`` as `rnnjax.scan`: the carry after each sequence's last
    valid step, and ``ys: [T, B, H]``, zero on padding.

  Raises:
    ValueError: ``cell`` is not one of the `SUPPORTED` built-ins.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> from rnnjax._src import pallas_rnn
    >>> cell = rj.lstm(4)
    >>> params = cell.init(jax.random.key(0), 3)
    >>> xs, c0 = jnp.ones((5, 2, 3)), cell.initial_carry((2,))
    >>> _, ys = pallas_rnn.pallas_scan(cell, params, xs, c0, None)
    >>> _, want = rj.scan(cell, params, xs)
    >>> bool(jnp.allclose(ys, want, atol=1e-6))
    True
  """
  rule = rule_for(cell)
  if rule is None:
    raise ValueError(_unsupported(cell, "rnnjax.scan(kernel='pallas')"))
  T, B, _ = xs.shape
  H, G = cell.hidden_size, rule.gates
  leaves, treedef = jax.tree.flatten(carry0)
  W = recurrent_weight(cell, params, "rnnjax.scan(kernel='pallas')")
  cdt, acc = compute_dtypes(cell.dtype, leaves[0], W)
  Hp, Bp = padded(H), -(-B // BLOCK_B) * BLOCK_B
  if resident is None:
    resident = Hp * G * Hp * jnp.dtype(cdt).itemsize <= RESIDENT_BYTES
  if interpret is None:
    interpret = jax.default_backend() != "gpu"
  cfg = Config(rule, cdt, acc, Hp, resident, interpret, num_warps=4 if Hp <= 128 else 8)

  zx = _pad_gates(cell.project(params, xs).astype(acc), G, H, Hp, Bp)  # [T, Bp, G·Hp]
  w_h = _pad_gates(W, G, H, Hp, Hp)  # [Hp, G·Hp]
  if rule.bias is None:  # a recurrent-side bias, declared by the rule (the GRU's b_hn)
    b_hn = jnp.zeros((1, Hp), w_h.dtype)
  else:
    b_hn = _pad_gates(field(params, rule.bias, "rnnjax.scan", "bias")[None], 1, H, Hp, 1)
  c0 = tuple(_pad_gates(c.astype(cdt), 1, H, Hp, Bp) for c in leaves)  # [Bp, Hp] each
  valid = jnp.ones((T, B), bool) if mask is None else mask
  m = jnp.pad(valid, ((0, 0), (0, Bp - B))).astype(jnp.int32)[..., None]  # [T, Bp, 1]

  last, hs = recurrence(cfg, w_h, b_hn, zx, c0, m)
  ys = hs[:, :B, :H]  # [T, B, H]
  if mask is not None:
    ys = jnp.where(mask[..., None], ys, jnp.zeros((), ys.dtype))
  return jax.tree.unflatten(treedef, [c[:B, :H] for c in last]), ys


# ----------------------------------------------------------------- dispatch

AUTO_WINS: tuple[tuple[str, int, int], ...] = ()
"""``(backend, max B, max H)`` where a GPU measurement showed the Pallas kernel
faster than the XLA scan (forward and backward); ``kernel="auto"`` picks it
only there. Empty until ``benchmarks/bench_pallas.py`` has run on a GPU, so
``"auto"`` is ``"xla"`` everywhere today."""


def _unsupported(cell: Cell, what: str) -> str:
  return (
    f"{what}: {cell!r} has no Pallas kernel; the supported cells are "
    f"{', '.join('rj.' + s for s in SUPPORTED)}; use kernel='xla' (or 'auto', which "
    f"falls back to it) for this cell"
  )


def use_pallas(kernel: str, cell: Cell, backward: str, resets: bool, B: int, what: str) -> bool:
  """Whether `rnnjax.scan` runs the Pallas kernels, checking ``kernel``'s value.

  ``"xla"`` and ``"ffi"`` (the C++ CPU kernel, `rnnjax._src.cpu_kernel`):
  never. ``"auto"``: only for a supported cell, the hand-written
  backward, no resets, and a shape that `AUTO_WINS` lists for this backend.
  ``"pallas"``: always, or a ValueError naming what does not fit and the fix.
  """
  if kernel not in KERNELS:
    raise ValueError(f"{what}: unknown kernel {kernel!r}; expected one of {KERNELS}")
  if kernel in ("xla", "ffi"):
    return False
  supported = rule_for(cell) is not None
  if kernel == "auto":
    H, backend = cell.hidden_size, jax.default_backend()
    fits = supported and backward in ("auto", "bptt") and not resets
    return fits and any(b == backend and mb >= B and mh >= H for b, mb, mh in AUTO_WINS)
  if not supported:
    raise ValueError(_unsupported(cell, f"{what}(kernel='pallas')"))
  if backward not in ("auto", "bptt"):
    raise ValueError(
      f"{what}(kernel='pallas'): the Pallas kernel has its own hand-written backward, "
      f"so backward={backward!r} does not apply; pass backward='auto' (or 'bptt'), "
      f"or kernel='xla' for {backward!r}"
    )
  if resets:
    raise ValueError(
      f"{what}(kernel='pallas'): resets are not supported by the Pallas kernel; "
      f"use kernel='xla' (or 'auto') with resets"
    )
  return True

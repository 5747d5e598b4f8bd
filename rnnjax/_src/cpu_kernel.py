"""A C++ CPU kernel for the built-in cells' time loop, called through ``jax.ffi``.

`rnnjax.scan(..., kernel="ffi")` runs here. As in the Pallas kernel
(`rnnjax._src.pallas_rnn`) only the sequential part leaves XLA; the input
projection and the weight gradients stay large XLA matmuls over all ``T·B``
rows, as in `rnnjax.bptt_scan`. Data flow (time-major; ``G`` gate blocks):

    zx = project(params, xs)              # [T, B, G·H], one matmul, bias included
    forward FFI call (rnnjax/_src/csrc/rnn_cpu.cc), w_h packed once per call:
      for t in 0..T-1:  S = h_{t-1} @ w_h ; carry_t = mask ? step(zx_t, S) : carry_{t-1}
      -> hs [T, B, H] (held past a length), cs (LSTM), the step's residuals
    backward FFI call, w_hᵀ packed once per call:
      for t in T-1..0:  dzx_t, dzh_t = step'(dh_t + dys_t, ...) ; dh_{t-1} = ... + dzh_t @ w_hᵀ
    dw_h = H_prevᵀ dZh                    # one matmul over all T·B rows, here

The cells: `rnnjax.lstm`, `rnnjax.gru` with ``reset="after"`` and `rnnjax.elman`
(every activation), in float32 or float64; each declares the C++ step that
computes its math (`rnnjax._src.cells.tiles.Rule`'s ``ffi`` field). Lengths
(a mask) are supported; ``reverse`` is `rnnjax.scan`'s flip around the kernel;
``resets``, another ``backward`` and the other cells are not, and
``kernel="ffi"`` says so and names the fix (``kernel="auto"`` falls back to
``"xla"``). Float32 on a CPU with AVX-512 and ``H`` a multiple of 16 runs a
hand-written register-blocked GEMM; otherwise plain C++ loops.

The extension is optional: it is compiled by ``pip install`` where a C++
compiler is found (``setup.py``), and `available` is False without it, or with
the environment variable ``RNNJAX_DISABLE_FFI=1``, or away from the CPU backend;
the pure-JAX kernels are then the only path, and the reference throughout
(``tests/test_cpu_kernel.py`` holds the two equal).
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src.cells.base import Cell, compute_dtypes, field, recurrent_weight
from rnnjax._src.cells.tiles import Rule
from rnnjax._src.typing import Array, Carry, Params

DISABLE_ENV = "RNNJAX_DISABLE_FFI"
"""Set to ``1`` to run as if the extension were not built (CI exercises it)."""

STEPS: dict[str, tuple[int, int]] = {
  "lstm": (0, 0),
  "gru": (1, 0),  # reset="after"
  "elman-tanh": (2, 0),
  "elman-relu": (2, 1),
  "elman-sigmoid": (2, 2),
  "elman-linear": (2, 3),
}
"""The C++ kernel's steps: a `Rule`'s ``ffi`` name -> (cell code, activation code)
as ``rnn_cpu.cc`` numbers them."""

AUTO_WINS: tuple[tuple[str, int, int], ...] = (("lstm", 128, 128), ("gru", 128, 128))
"""``(step, min H, max B)`` where ``benchmarks/bench_ffi.py`` measured the FFI
kernel faster than the XLA scan in both modes, forward+backward and forward-only,
float32, on a quiet machine (``benchmarks/results/ffi_cpu.md``: the LSTM and the
GRU at the latency, medium and large shapes, 1.05-1.76x; Elman's forward lost at
the latency and medium shapes, so it is not listed); ``kernel="auto"`` picks it
only there."""


_TARGETS = {"forward": "rnnjax_cpu_forward", "backward": "rnnjax_cpu_backward"}


@functools.lru_cache(maxsize=1)
def _load() -> tuple[Any, str]:
  """The extension module, its FFI targets registered (once), or None and why."""
  try:
    from rnnjax._src import _rnn_cpu  # type: ignore[attr-defined]
  except ImportError as e:
    return None, f"the extension rnnjax._src._rnn_cpu is not built ({e})"
  for name, target in _TARGETS.items():
    jax.ffi.register_ffi_target(target, getattr(_rnn_cpu, name), platform="cpu")
  return _rnn_cpu, ""


def unavailable_reason() -> str | None:
  """Why the FFI kernel cannot run here, and the fix, or None when it can."""
  if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
    return f"it is disabled by the environment variable {DISABLE_ENV}=1; unset it"
  module, why = _load()
  if module is None:
    return (
      f"{why}; build it by reinstalling rnnjax with a C++ compiler present (pip install -e . "
      f"compiles rnnjax/_src/csrc)"
    )
  if jax.default_backend() != "cpu":
    return f"it runs on the CPU backend only, and JAX's default backend is {jax.default_backend()}"
  return None


def available() -> bool:
  """Whether ``rnnjax.scan(..., kernel="ffi")`` can run: the extension is built,
  not disabled by ``RNNJAX_DISABLE_FFI=1``, and JAX's default backend is the CPU.

  Examples:
    >>> from rnnjax._src import cpu_kernel
    >>> isinstance(cpu_kernel.available(), bool)
    True
  """
  return unavailable_reason() is None


def rule_for(cell: Cell) -> Rule | None:
  """The cell's `Rule` when the C++ kernel has its step, else None."""
  rule = cell.compiled.pallas
  return rule if isinstance(rule, Rule) and rule.ffi in STEPS else None


def _unfit(cell: Cell, backward: str, resets: bool, cdt: Any, acc: Any) -> str | None:
  """What keeps the FFI kernel from running this call (with the fix), or None."""
  if rule_for(cell) is None:
    return (
      f"{cell!r} has no C++ step; the supported cells are rj.lstm, rj.gru(H, reset='after') "
      f"and rj.elman; use kernel='xla' (or 'auto', which falls back to it) for this cell"
    )
  if backward not in ("auto", "bptt"):
    return (
      f"the FFI kernel has its own hand-written backward, so backward={backward!r} does not "
      f"apply; pass backward='auto' (or 'bptt'), or kernel='xla' for {backward!r}"
    )
  if resets:
    return "resets are not supported by the FFI kernel; use kernel='xla' (or 'auto') with resets"
  if cdt != acc or jnp.dtype(cdt) not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.float64)):
    return (
      f"the FFI kernel computes in float32 or float64, not {jnp.dtype(cdt).name}; use "
      f"kernel='xla' (or 'auto') for this dtype"
    )
  return None


def use_ffi(
  kernel: str, cell: Cell, params: Params, xs: Array, backward: str, resets: bool, what: str
) -> bool:
  """Whether `rnnjax.scan` runs the FFI kernel (``kernel`` already checked).

  ``"ffi"``: always, or a ValueError naming what does not fit and the fix.
  ``"auto"``: only where it is available, fits, and `AUTO_WINS` lists the shape.
  """
  if kernel not in ("ffi", "auto"):
    return False
  rule = rule_for(cell)
  B, H = xs.shape[1], cell.hidden_size
  if kernel == "auto" and (
    rule is None or not any(s == rule.ffi and mh <= H and mb >= B for s, mh, mb in AUTO_WINS)
  ):
    return False  # the default path: nothing more is read unless AUTO_WINS lists the shape
  W = [] if rule is None else [recurrent_weight(cell, params, what)]
  cdt, acc = compute_dtypes(cell.dtype, xs, *W)
  unfit = _unfit(cell, backward, resets, cdt, acc)
  if kernel == "auto":
    return unfit is None and jnp.dtype(cdt) == jnp.dtype(jnp.float32) and available()
  why = unavailable_reason()
  if why is not None:
    raise ValueError(
      f"{what}(kernel='ffi'): the C++ CPU kernel cannot run: {why}; or use kernel='xla' (or "
      f"'auto', which falls back to it)"
    )
  if unfit is not None:
    raise ValueError(f"{what}(kernel='ffi'): {unfit}")
  return True


# ----------------------------------------------------------------- the recurrence


class Config(NamedTuple):
  """The static choices of one call (hashable: a ``custom_vjp`` static arg)."""

  rule: Rule
  cell: int  # rnn_cpu.cc's cell code
  act: int  # and activation code


def _call(target: str, outs: list[jax.ShapeDtypeStruct], *args: Array, **attrs: Any) -> Any:
  _load()  # registers the targets
  attrs = {k: (v if isinstance(v, bool) else np.int64(v)) for k, v in attrs.items()}
  return jax.ffi.ffi_call(_TARGETS[target], outs, vmap_method="sequential")(*args, **attrs)


def _forward(
  cfg: Config,
  w_h: Array,
  b_hn: Array,
  zx: Array,
  carry0: tuple[Array, ...],
  mask: Array,
  keep: bool,
) -> tuple[Array, Array, Array]:
  """The forward call: ``(hs, cs, res)``; ``cs`` is ``[0]`` but for the LSTM,
  ``res`` ``[0]`` without ``keep`` (and for the Elman cell)."""
  T, B, _ = zx.shape
  H, dt = w_h.shape[0], zx.dtype
  lstm, R = cfg.rule.leaves == 2, cfg.rule.residuals
  c0 = carry0[1] if lstm else jnp.zeros((0,), dt)

  def sds(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dt)

  outs = [
    sds(T, B, H),
    sds(T, B, H) if lstm else sds(0),
    sds(T, B, R * H) if keep and R else sds(0),
  ]
  hs, cs, res = _call(
    "forward", outs, zx, w_h, b_hn, carry0[0], c0, mask, cell=cfg.cell, act=cfg.act, keep=keep
  )
  return hs, cs, res


def _last(cfg: Config, hs: Array, cs: Array) -> tuple[Array, ...]:
  """The carry after each sequence's last valid step (the kernel holds it)."""
  return (hs[-1], cs[-1]) if cfg.rule.leaves == 2 else (hs[-1],)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def recurrence(
  cfg: Config, w_h: Array, b_hn: Array, zx: Array, carry0: tuple[Array, ...], mask: Array
) -> tuple[tuple[Array, ...], Array]:
  """The recurrence, with the hand-written backward of ``rnn_cpu.cc``.

  Args:
    cfg: the static `Config`.
    w_h: ``[H, G·H]``, the recurrent weights, gate blocks side by side.
    b_hn: ``[H]``, the GRU's ``b_hn`` (``reset="after"``), else ``[0]``.
    zx: ``[T, B, G·H]``, the projected inputs, bias included.
    carry0: the initial carry's leaves, each ``[B, H]``.
    mask: ``[T, B]`` int32, nonzero on valid steps (a prefix of each row).

  Returns:
    ``(carry_T, hs)``: the carry's leaves after each row's last valid step,
    and ``hs: [T, B, H]``, the held ``h_t`` (not zeroed on padding).
  """
  hs, cs, _ = _forward(cfg, w_h, b_hn, zx, carry0, mask, keep=False)
  return _last(cfg, hs, cs), hs


def _recurrence_fwd(
  cfg: Config, w_h: Array, b_hn: Array, zx: Array, carry0: tuple[Array, ...], mask: Array
) -> tuple[tuple[tuple[Array, ...], Array], tuple[Any, ...]]:
  hs, cs, res = _forward(cfg, w_h, b_hn, zx, carry0, mask, keep=True)
  return (_last(cfg, hs, cs), hs), (w_h, b_hn, carry0, hs, cs, res, mask)


def _recurrence_bwd(
  cfg: Config, residuals: tuple[Any, ...], g: tuple[tuple[Array, ...], Array]
) -> tuple[Array, Array, Array, tuple[Array, ...], None]:
  """The reverse loop in one call, then ``dw_h = H_prevᵀ dZh`` as one matmul
  over all ``N = T·B`` rows (and the GRU's ``db_hn = Σ dZh_n``)."""
  w_h, b_hn, carry0, hs, cs, res, mask = residuals
  dlast, dhs = g
  rule = cfg.rule
  T, B, H = hs.shape
  dt, N, lstm = hs.dtype, T * B, rule.leaves == 2
  c0 = carry0[1] if lstm else jnp.zeros((0,), dt)
  dcT = dlast[1] if lstm else jnp.zeros((0,), dt)

  def sds(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dt)

  G = rule.gates
  outs = [sds(T, B, G * H), sds(T, B, G * H) if rule.split else sds(0), sds(B, H)]
  outs.append(sds(B, H) if lstm else sds(0))
  dzx, dzh, dh0, dc0 = _call(
    "backward",
    outs,
    w_h,
    b_hn,
    carry0[0],
    c0,
    mask,
    hs,
    cs,
    res,
    dhs.astype(dt),
    dlast[0].astype(dt),
    dcT.astype(dt),
    cell=cfg.cell,
    act=cfg.act,
  )
  rows = dzh if rule.split else dzx
  h_prev = jnp.concatenate([carry0[0][None], hs[:-1]]).reshape(N, H)  # [N, H]
  flat_res = res.reshape(N, -1) if res.size else None
  dw_h, db_hn = rule.weight_grads(h_prev, flat_res, rows.reshape(N, G * H), dt)
  db = jnp.zeros_like(b_hn) if db_hn is None else db_hn.reshape(b_hn.shape).astype(b_hn.dtype)
  dcarry0 = (dh0, dc0) if lstm else (dh0,)
  return dw_h.astype(w_h.dtype), db, dzx, dcarry0, None


recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


# ----------------------------------------------------------------- the entry point


def ffi_scan(
  cell: Cell, params: Params, xs: Array, carry0: Carry, mask: Array | None
) -> tuple[Carry, Array]:
  """Run a built-in ``cell`` over ``xs`` with the C++ kernel.

  `rnnjax.scan` calls this for ``kernel="ffi"`` after checking its arguments
  (`use_ffi`) and reversing sequences; call it directly only with inputs
  already in that form. Gradients (for ``params``, ``xs`` and ``carry0``)
  come from the kernel's hand-written backward, a ``jax.custom_vjp``.

  Args:
    cell: `rnnjax.lstm`, `rnnjax.gru` (``reset="after"``) or `rnnjax.elman`.
    params: the cell's params.
    xs: ``[T, B, I]`` time-major inputs, ``T, B >= 1``.
    carry0: the initial carry for batch B, in the compute dtype.
    mask: ``[T, B]`` bool, True on valid steps (a prefix of each sequence),
      or None when every step is valid.

  Returns:
    ``(carry_T, ys)`` as `rnnjax.scan`: the carry after each sequence's last
    valid step, and ``ys: [T, B, H]``, zero on padding.

  Raises:
    ValueError: ``cell`` has no C++ step (`rule_for` is None).
  """
  rule = rule_for(cell)
  if rule is None or rule.ffi is None:
    raise ValueError(f"rnnjax.scan(kernel='ffi'): {cell!r} has no C++ step")
  code, act = STEPS[rule.ffi]
  T, B, _ = xs.shape
  leaves, treedef = jax.tree.flatten(carry0)
  what = "rnnjax.scan(kernel='ffi')"
  W = recurrent_weight(cell, params, what)
  cdt, _ = compute_dtypes(cell.dtype, leaves[0], W)
  zx = cell.project(params, xs).astype(cdt)  # [T, B, G·H]
  if rule.bias is None:
    b_hn = jnp.zeros((0,), cdt)
  else:
    b_hn = field(params, rule.bias, "rnnjax.scan", "bias").astype(cdt)
  valid = jnp.ones((T, B), bool) if mask is None else mask
  cfg = Config(rule, code, act)
  last, hs = recurrence(
    cfg, W.astype(cdt), b_hn, zx, tuple(c.astype(cdt) for c in leaves), valid.astype(jnp.int32)
  )
  ys = hs if mask is None else jnp.where(mask[..., None], hs, jnp.zeros((), hs.dtype))
  return jax.tree.unflatten(treedef, list(last)), ys

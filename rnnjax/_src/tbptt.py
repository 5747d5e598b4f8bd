"""The implementation of `rnnjax.tbptt`, whose module docstring documents it.

Truncated BPTT (Williams & Peng 1990) for training on long streams.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple, Protocol, cast

import jax

from rnnjax._src import arguments
from rnnjax._src.cells.base import Cell
from rnnjax._src.scan import check_resets, scan
from rnnjax._src.typing import Array, Carry, PyTree

__all__ = ["TruncatedBPTT", "Window", "truncated_bptt", "windows"]


class Window(NamedTuple):
  """One TBPTT window: the inputs ``[start, stop)``, the losses ``[loss_from, stop)``.

  Attributes:
    start: the first input the gradient flows through (``max(0, stop − k2)``).
    stop: one past the last input.
    loss_from: the first step whose loss counts (``stop − k1``).
  """

  start: int  # first input the gradient flows through
  stop: int  # one past the last input
  loss_from: int  # first step whose loss counts (stop - k1)


def windows(T: int, k1: int, k2: int) -> list[Window]:
  """The TBPTT(k1, k2) windows over a stream of ``T`` steps.

  A trailing part shorter than ``k1`` is left out. Early windows start at 0
  when ``stop < k2``.

  Args:
    T: the stream's length.
    k1: steps between updates (and the steps whose loss each window counts).
    k2: steps of backpropagation, ``k2 >= k1``.

  Returns:
    The `Window`s in order, ``T // k1`` of them.

  Raises:
    ValueError: ``T``, ``k1`` or ``k2`` is not a positive int, ``k2 < k1``,
      or ``k1 > T``.

  Examples:
    >>> from rnnjax import tbptt
    >>> tbptt.windows(10, 3, 5)
    [Window(start=0, stop=3, loss_from=0),
     Window(start=1, stop=6, loss_from=3),
     Window(start=4, stop=9, loss_from=6)]
  """
  for name, v in (("k1", k1), ("k2", k2), ("T", T)):
    arguments.positive_int(name, v, "truncated BPTT")
  if k2 < k1:
    raise ValueError(
      f"truncated BPTT: k2={k2} < k1={k1} would leave the losses of "
      f"{k1 - k2} steps per window without a gradient path; use k2 >= k1"
    )
  if k1 > T:
    raise ValueError(f"truncated BPTT: the stream has T={T} steps, fewer than k1={k1}")
  return [Window(max(0, s - k2), s, s - k1) for s in range(k1, T + 1, k1)]


class TruncatedBPTT(Protocol):
  """What `truncated_bptt` builds: ``run(params, xs, targets, carry=None)``.

  Attributes:
    run_window: ``run_window(params, carry, xs_w, targets_w, n_head) ->
      (loss, grads, carry)``, one jitted window of ``n_head + k1`` inputs
      (``n_head`` steps of history whose loss does not count, then ``k1`` that
      count), the gradient stopped at its initial carry; for online loops
      that update the params between windows. Optional keywords
      ``resets_w`` (the window's ``[n_head + k1, B]`` slice of the resets) and
      ``reset_carry`` (what a reset returns to; default the cell's initial
      carry, zeros for the built-ins).
  """

  run_window: Callable[..., tuple[Array, PyTree, Carry]]

  def __call__(
    self,
    params: PyTree,
    xs: Array,
    targets: Array,
    carry: Carry | None = None,
    resets: Array | None = None,
  ) -> tuple[list[Array], list[PyTree], Carry]:
    """Every window's loss and gradients over one stream, with fixed params.

    Args:
      params: the whole params tree; its ``"rnn"`` entry is the cell's.
      xs: the stream ``[T, B, I]``.
      targets: ``[T, ...]``, sliced along time as ``xs``.
      carry: the carry at the stream's start (default zeros).
      resets: optional ``[T, B]`` bool, True where an episode starts (see
        `rnnjax.scan`); sliced per window like ``xs``, and a reset restarts
        from the cell's initial carry (zeros), not from ``carry`` or the
        window's start carry.

    Returns:
      ``(losses, grads, carry)``: one loss and one gradient tree per
      `Window` (lists, in order), and the carry after the last window.
    """
    ...


def truncated_bptt(
  cell: Cell,
  loss_fn: Callable[[PyTree, Array, Array], Array],
  k1: int,
  k2: int,
  **scan_kw: Any,
) -> TruncatedBPTT:
  """Build ``run(params, xs, targets, carry=None) -> (losses, grads, carry)``.

  Args:
    cell: a `rnnjax.Cell`.
    loss_fn: ``loss_fn(params, ys [W, B, H], targets [W, ...]) -> scalar``, the
      loss of the ``W = k1`` steps whose loss counts. ``params`` is the whole
      tree passed to ``run``, whose ``rnn`` field is the cell's params
      (e.g. a dict ``{"rnn": ..., "head": ...}``).
    k1: steps between updates.
    k2: steps of backpropagation (``k2 >= k1``).
    **scan_kw: passed to `rnnjax.scan` (``backward``, ``unroll``, ...).

  Returns:
    ``run`` (a `TruncatedBPTT`): over a stream ``xs: [T, B, I]`` (with
    optional episode ``resets: [T, B]``), one
    ``(loss, grads)`` per window (lists, in order; apply them with your
    optimizer as they come, or use ``run.run_window`` for an online loop),
    and the carry at the end. Its windows are checked (`windows`) when it
    runs.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> cell = rj.gru(4)
    >>> params = {"rnn": cell.init(jax.random.key(0), 3), "head": jnp.ones(4)}
    >>> loss_fn = lambda p, ys, t: jnp.mean((ys @ p["head"] - t) ** 2)
    >>> run = rj.tbptt.truncated_bptt(cell, loss_fn, k1=4, k2=4)
    >>> losses, grads, carry = run(params, jnp.ones((8, 2, 3)), jnp.zeros((8, 2)))
    >>> len(losses), grads[0]["rnn"].w_h.shape, carry.shape
    (2, (4, 12), (2, 4))
  """

  def scan_part(
    p: PyTree, xs_p: Array, carry: Carry, resets_p: Array | None, reset_carry: Carry | None
  ) -> tuple[Carry, Array]:
    """`scan` from ``carry`` whose resets restart from ``reset_carry`` (None:
    the cell's initial carry), `rnnjax.scan`'s own semantics."""
    if resets_p is None:
      return scan(cell, p, xs_p, carry, **scan_kw)
    return scan(cell, p, xs_p, carry, resets=resets_p, reset_carry=reset_carry, **scan_kw)

  @partial(jax.jit, static_argnames=("n_head",))
  def run_window(
    params: PyTree,
    carry: Carry,
    xs_w: Array,
    targets_w: Array,
    n_head: int,
    resets_w: Array | None = None,
    reset_carry: Carry | None = None,
  ) -> tuple[Array, PyTree, Carry]:
    """One window of ``n_head + k1`` inputs: ``n_head`` steps of history
    whose loss does not count, then ``k1`` steps that count."""
    carry = jax.lax.stop_gradient(carry)
    reset_carry = jax.lax.stop_gradient(reset_carry)
    r_head, r_tail = (None, None) if resets_w is None else (resets_w[:n_head], resets_w[n_head:])

    def loss(params: PyTree) -> tuple[Array, Carry]:
      p = params["rnn"]
      c_mid, _ = (
        (carry, None) if n_head == 0 else scan_part(p, xs_w[:n_head], carry, r_head, reset_carry)
      )
      c_end, ys = scan_part(p, xs_w[n_head:], c_mid, r_tail, reset_carry)
      return loss_fn(params, ys, targets_w), c_end

    (value, c_end), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads, c_end

  @jax.jit
  def advance(
    params: PyTree, carry: Carry, xs_w: Array, resets_w: Array | None, reset_carry: Carry | None
  ) -> Carry:
    return scan_part(params["rnn"], xs_w, carry, resets_w, reset_carry)[0]

  def run(
    params: PyTree,
    xs: Array,
    targets: Array,
    carry: Carry | None = None,
    resets: Array | None = None,
  ) -> tuple[list[Array], list[PyTree], Carry]:
    T, B = xs.shape[:2]
    if carry is None:
      carry = cell.initial_carry((B,), xs.dtype)
    reset_carry = None  # a reset restarts from the cell's initial carry, as rj.scan's
    if resets is not None:
      resets = check_resets(resets, T, B, True, "truncated BPTT")

    def cut(a: int, b: int) -> Array | None:
      return None if resets is None else resets[a:b]

    losses, grads = [], []
    starts = {0: carry}  # carries at future window starts
    c = carry
    for w in windows(T, k1, k2):
      c_start = starts.pop(w.start)
      n_head = w.loss_from - w.start
      value, g, c = run_window(
        params,
        c_start,
        xs[w.start : w.stop],
        targets[w.loss_from : w.stop],
        n_head=n_head,
        resets_w=cut(w.start, w.stop),
        reset_carry=reset_carry,
      )
      losses.append(value)
      grads.append(g)
      # the next window starts at (stop + k1 - k2); it lies at or before stop
      nxt = max(0, w.stop + k1 - k2)
      if nxt == w.stop:
        starts[nxt] = c
      elif nxt not in starts:
        starts[nxt] = (
          advance(params, c_start, xs[w.start : nxt], cut(w.start, nxt), reset_carry)
          if nxt > w.start
          else c_start
        )
    return losses, grads, c

  typed = cast(TruncatedBPTT, run)
  typed.run_window = run_window
  return typed

"""Truncated BPTT (Williams & Peng 1990) for training on long streams.

TBPTT(k1, k2): every ``k1`` steps, backpropagate through the last ``k2``
steps. Window ``u`` ends at ``stop = (u+1)·k1`` and starts at
``start = stop − k2``; its loss is taken on the last ``k1`` steps
``[stop − k1, stop)``, and its initial carry is the carry at ``start``
with the gradient stopped. When ``k2 > k1`` the carry at the next window's
start (``stop + k1 − k2``) comes from a forward-only scan over the first ``k1``
steps of the window. ``k1 = k2`` is plain chunked BPTT with the carry passed
between chunks.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, NamedTuple

import jax

from rnnjax.scan import scan


class Window(NamedTuple):
  start: int      # first input the gradient flows through
  stop: int       # one past the last input
  loss_from: int  # first step whose loss counts (stop - k1)


def windows(T: int, k1: int, k2: int) -> list[Window]:
  """The TBPTT windows over a stream of ``T`` steps (a trailing part shorter
  than ``k1`` is left out). Early windows start at 0 when ``stop < k2``."""
  for name, v in (("k1", k1), ("k2", k2), ("T", T)):
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"truncated BPTT: {name} must be a positive int, got {v!r}")
  if k2 < k1:
    raise ValueError(f"truncated BPTT: k2={k2} < k1={k1} would leave the losses of "
                     f"{k1 - k2} steps per window without a gradient path; use k2 >= k1")
  if T < k1:
    raise ValueError(f"truncated BPTT: the stream has T={T} steps, fewer than k1={k1}")
  return [Window(max(0, s - k2), s, s - k1) for s in range(k1, T + 1, k1)]


def truncated_bptt(cell, loss_fn: Callable, k1: int, k2: int, **scan_kw):
  """Build ``run(params, xs, targets, carry=None) -> (losses, grads, carry)``.

  Args:
    cell: a `rnnjax.Cell`.
    loss_fn: ``loss_fn(params, ys [W, B, H], targets [W, ...]) -> scalar``, the
      loss of the ``W = k1`` steps whose loss counts. ``params`` is the whole
      tree passed to ``run``, whose ``rnn`` field is the cell's params
      (e.g. a dict ``{"rnn": ..., "head": ...}``).
    k1: steps between updates; k2: steps of backpropagation (``k2 >= k1``).
    **scan_kw: passed to `rnnjax.scan` (``backward``, ``unroll``, ...).

  Returns:
    ``run``: over a stream ``xs: [T, B, I]``, one ``(loss, grads)`` per
    window (lists, in order; apply them with your optimizer as they come, or
    use ``run_window`` below for an online loop), and the carry at the end.
  """

  @partial(jax.jit, static_argnames=("n_head",))
  def run_window(params, carry, xs_w, targets_w, n_head):
    """One window of ``n_head + k1`` inputs: ``n_head`` steps of history
    whose loss does not count, then ``k1`` steps that count."""
    carry = jax.lax.stop_gradient(carry)

    def loss(params):
      c_mid, ys_head = (carry, None) if n_head == 0 else scan(
          cell, params["rnn"], xs_w[:n_head], carry, **scan_kw)
      c_end, ys = scan(cell, params["rnn"], xs_w[n_head:], c_mid, **scan_kw)
      return loss_fn(params, ys, targets_w), c_end

    (value, c_end), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return value, grads, c_end

  @jax.jit
  def advance(params, carry, xs_w):
    return scan(cell, params["rnn"], xs_w, carry, **scan_kw)[0]

  def run(params, xs, targets, carry=None):
    T, B = xs.shape[:2]
    if carry is None:
      carry = cell.initial_carry((B,), xs.dtype)
    losses, grads = [], []
    starts = {0: carry}                       # carries at future window starts
    c = carry
    for w in windows(T, k1, k2):
      c_start = starts.pop(w.start)
      n_head = w.loss_from - w.start
      value, g, c = run_window(params, c_start, xs[w.start:w.stop],
                               targets[w.loss_from:w.stop], n_head=n_head)
      losses.append(value)
      grads.append(g)
      # the next window starts at (stop + k1 - k2); it lies at or before stop
      nxt = max(0, w.stop + k1 - k2)
      if nxt == w.stop:
        starts[nxt] = c
      elif nxt not in starts:
        starts[nxt] = advance(params, c_start, xs[w.start:nxt]) if nxt > w.start else c_start
    return losses, grads, c

  run.run_window = run_window
  return run

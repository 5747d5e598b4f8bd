"""`check_cell`: a conformance check a user runs on a cell, built-in or their own.

A `Cell` carries the same recurrence several times over: ``step`` (the
definition), the fast path the kernel runs (``project`` + ``fast_step`` +
the output), a hand-written local backward (``backward_step``, with
``recurrent_grads``) and a closed-form step Jacobian (``state_jacobian``).
`check_cell` holds each against the definition and against autodiff, in
float64 on random inputs, and checks the semantics every cell inherits from
the kernel (``lengths``, ``reverse``), so a hint that is wrong fails here,
named, instead of silently giving wrong gradients in training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src import arguments
from rnnjax._src import jacobian as jac
from rnnjax._src.cells.base import Cell
from rnnjax._src.scan import Backward, scan
from rnnjax._src.typing import Array, Carry, Params

_TINY = 1e-300


class CellCheck(NamedTuple):
  """One line of `check_cell`'s report.

  Attributes:
    slot: the `Cell` slot under test (``"fast_step"``, ``"backward_step"``,
      ...), or the semantics (``"lengths"``, ``"reverse"``).
    compared: what was held against what.
    max_abs_err: the largest ``|got − want|`` over every leaf compared.
    max_rel_err: the largest ``max|got − want| / max|want|`` over the leaves.
    passed: every element met ``|got − want| <= atol + rtol·|want|``.
    leaf: the leaf (path) with the largest relative error, and the index of
      its largest error.
    skipped: the cell has nothing to check here (no closed-form Jacobian).
  """

  slot: str
  compared: str
  max_abs_err: float
  max_rel_err: float
  passed: bool
  leaf: str = ""
  skipped: bool = False


class CellCheckError(AssertionError):
  """`check_cell` found a mismatch: the message names the check, the slot, the
  leaf and the error.

  Attributes:
    check: the report key of the failed check (``"backward_step"``, ...).
    slot: the slot under test.
    leaf: the leaf (path and index) with the largest error, or ``""``.
    report: the report up to and including the failed check.
  """

  def __init__(self, message: str, check: str, slot: str, leaf: str, report: dict[str, CellCheck]):
    super().__init__(message)
    self.check = check
    self.slot = slot
    self.leaf = leaf
    self.report = report


def check_cell(
  cell: Cell,
  input_size: int,
  *,
  key: Array | None = None,
  batch_size: int = 3,
  length: int = 5,
  rtol: float = 1e-7,
  atol: float = 1e-9,
) -> dict[str, CellCheck]:
  """Check every slot of ``cell`` against its ``step`` and autodiff, in float64.

  Run it on a cell you wrote (`rnnjax.custom_cell`, or a `Cell` with
  hand-written hints) before training with it. The params come from
  ``cell.init(key, input_size)`` plus noise (so that no bias sits at zero);
  the inputs ``xs: [T, B, I]`` and the initial carry are random, and the
  sequences' lengths run from ``T`` down to 0. The checks, in the report's
  order, stopping at the first mismatch:

  * ``"carry"``: a step (``step``, and ``fast_step`` after ``project``) keeps
    the carry's structure, shapes and floating dtypes, and ``y`` is
    ``[B, hidden_size]``; by ``jax.eval_shape``.
  * ``"fast_step"``: `rnnjax.scan` (``project`` + ``fast_step`` + the output,
    in the kernel) equals ``cell.step`` run in a Python loop.
  * ``"lengths"``: a padded batch equals each sequence run alone, unpadded:
    zeros past each length, and the carry at its last valid step.
  * ``"reverse"``: ``reverse=True`` equals running each sequence flipped
    (inside its length, and over the whole batch without ``lengths``).
  * ``"backward_step"``: the gradients of the params, ``xs`` and the initial
    carry by ``backward="bptt"`` (the hand-written backward) equal those of
    ``backward="autodiff"``, without and with ``lengths`` and ``reverse``.
    The slot is ``"recurrent_grads"`` when the cell has that rule and only
    the params' gradients differ.
  * ``"state_jacobian"``: the closed form equals ``jax.jacfwd`` of ``step``
    (`rnnjax.jacobian.step_jacobians`); skipped when the cell has none.
  * ``"state_diagonal"``: the closed-form diagonal (`rnnjax.ClosedDiagonal`)
    equals the diagonal of ``jax.jacfwd`` of ``step``; skipped when the cell
    has none.

  Args:
    cell: the `rnnjax.Cell` to check.
    input_size: I.
    key: PRNG key of the params and inputs (default ``jax.random.key(0)``).
    batch_size: B, at least 2 (one full-length and one empty sequence).
    length: T, at least 2.
    rtol: relative tolerance, per element: ``|got − want| <= atol + rtol·|want|``.
    atol: absolute tolerance, per element.

  Returns:
    The report, ``{check: CellCheck}`` in the order above, each with its
    slot, largest absolute and relative errors and worst leaf.

  Raises:
    CellCheckError: (an ``AssertionError``) at the first mismatch, or when a
      slot raises; the message names the check, the slot, the leaf (its path
      and the index of its largest error) and the errors.
    TypeError: ``cell`` is not a `rnnjax.Cell`, or ``key`` is not a PRNG key.
    ValueError: a size or a tolerance is out of range.

  Examples:
    >>> import jax, rnnjax as rj
    >>> report = rj.check_cell(rj.gru(3, reset="after"), 2)
    >>> list(report)
    ['carry', 'fast_step', 'lengths', 'reverse', 'backward_step', 'state_jacobian',
     'state_diagonal']
    >>> all(c.passed for c in report.values()), report["backward_step"].max_rel_err < 1e-10
    (True, True)

    A hand-written backward that is off by 1% is caught and named:

    >>> cell = rj.lstm(3)
    >>> wrong = lambda *a: jax.tree.map(lambda d: 1.01 * d, cell.backward_step(*a))
    >>> try:
    ...   check_cell(cell._replace(backward_step=wrong), 2)
    ... except AssertionError as e:
    ...   print(e.check, e.slot)
    backward_step backward_step
  """
  what = f"rnnjax.check_cell({cell!r})"
  if not isinstance(cell, Cell):
    raise TypeError(
      f"rnnjax.check_cell: cell must be an rnnjax Cell (e.g. rj.lstm(H) or "
      f"rj.custom_cell(...)), got {type(cell).__name__}"
    )
  arguments.positive_int("input_size", input_size, what)
  B = arguments.positive_int("batch_size", batch_size, what)
  T = arguments.positive_int("length", length, what)
  if B < 2 or T < 2:
    raise ValueError(f"{what}: batch_size and length must be at least 2, got {B} and {T}")
  for name, tol in (("rtol", rtol), ("atol", atol)):
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol >= 0:
      raise ValueError(f"{what}: {name} must be a non-negative number, got {tol!r}")
  key = jax.random.key(0) if key is None else arguments.prng_key(key, what)
  with jax.enable_x64(True):
    return _Checker(cell, what, float(rtol), float(atol)).run(key, input_size, B, T)


# ---------------------------------------------------------------- comparisons


def _named(tree: Any, prefix: str) -> list[tuple[str, Any]]:
  return [
    (prefix + jax.tree_util.keystr(path), leaf)
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
  ]


class _Leaf(NamedTuple):
  name: str
  abs_err: float
  rel_err: float
  passed: bool
  where: str  # "name at index (…)" or a shape mismatch


def _compare_leaf(name: str, got: Any, want: Any, rtol: float, atol: float) -> _Leaf:
  a, b = np.asarray(got, np.float64), np.asarray(want, np.float64)
  if a.shape != b.shape:
    return _Leaf(name, np.inf, np.inf, False, f"{name} (shape {a.shape}, expected {b.shape})")
  if a.size == 0:
    return _Leaf(name, 0.0, 0.0, True, name)
  err = np.abs(a - b)
  err = np.where(np.isnan(a) != np.isnan(b), np.inf, np.nan_to_num(err, nan=0.0))
  ok = err <= atol + rtol * np.abs(np.nan_to_num(b))
  i = int(np.argmax(err))
  abs_err = float(err.flat[i])
  rel_err = abs_err / max(float(np.max(np.abs(np.nan_to_num(b)))), _TINY)
  index = tuple(int(k) for k in np.unravel_index(i, err.shape))
  return _Leaf(name, abs_err, rel_err, bool(ok.all()), f"{name} at index {index}")


def _compare(
  got: list[tuple[str, Any]], want: list[tuple[str, Any]], rtol: float, atol: float
) -> list[_Leaf]:
  got_names = [n for n, _ in got]
  want_names = [n for n, _ in want]
  if got_names != want_names:
    return [
      _Leaf("<structure>", np.inf, np.inf, False, f"leaves {got_names}, expected {want_names}")
    ]
  return [_compare_leaf(n, g, w, rtol, atol) for (n, g), (_, w) in zip(got, want, strict=True)]


# ---------------------------------------------------------------- the checks


class _Checker:
  """Runs the checks in order, filling the report; raises at the first mismatch."""

  def __init__(self, cell: Cell, what: str, rtol: float, atol: float):
    self.cell, self.what, self.rtol, self.atol = cell, what, rtol, atol
    self.report: dict[str, CellCheck] = {}
    self.step: Callable[..., Any] = jax.jit(cell.step)  # the reference, one compiled step

  # -------------------------------------------------------------- bookkeeping

  def fail(self, check: str, slot: str, leaf: str, message: str) -> CellCheckError:
    message = f"{self.what}: check {check!r} failed in slot {slot!r}: {message}"
    return CellCheckError(message, check, slot, leaf, self.report)

  def guarded(self, check: str, slot: str, fn: Callable[[], Any]) -> Any:
    """``fn()``; an exception from it becomes a `CellCheckError` naming the slot."""
    try:
      return fn()
    except CellCheckError:
      raise
    except Exception as e:
      first = str(e).strip().splitlines()[0] if str(e).strip() else ""
      self.report[check] = CellCheck(slot, "raised", np.inf, np.inf, False)
      raise self.fail(check, slot, "", f"{slot} raised {type(e).__name__}: {first}") from e

  def record(
    self,
    check: str,
    slot: str | Callable[[list[_Leaf]], str],
    compared: str,
    leaves: list[_Leaf],
    hint: str,
  ) -> None:
    bad = [leaf for leaf in leaves if not leaf.passed]
    pool = bad or leaves
    worst = max(pool, key=lambda leaf: leaf.rel_err) if pool else None
    abs_err = max((leaf.abs_err for leaf in leaves), default=0.0)
    rel_err = max((leaf.rel_err for leaf in leaves), default=0.0)
    slot_name = slot(bad) if callable(slot) and bad else slot if isinstance(slot, str) else check
    where = worst.where if worst is not None else ""
    self.report[check] = CellCheck(slot_name, compared, abs_err, rel_err, not bad, where)
    if bad:
      assert worst is not None
      others = [leaf.name for leaf in bad if leaf is not worst]
      also = (
        f"; also off: {', '.join(others[:6])}{', …' if len(others) > 6 else ''}" if others else ""
      )
      raise self.fail(
        check,
        slot_name,
        where,
        f"{compared} differ at {where}: max abs error {worst.abs_err:.3g}, "
        f"max rel error {worst.rel_err:.3g} (rtol={self.rtol:g}, atol={self.atol:g}){also}; "
        f"{hint}",
      )

  # -------------------------------------------------------------- the run

  def run(self, key: Array, I: int, B: int, T: int) -> dict[str, CellCheck]:
    cell = self.cell
    # Random inputs by NumPy, seeded from the key: no PRNG programs to compile.
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())
    params = self.guarded("carry", "init", lambda: cell.init(key, I))
    params = _noisy(params, rng, 0.1)  # no bias left at exactly zero
    xs = rng.standard_normal((T, B, I))
    carry0 = self.guarded("carry", "initial_carry", lambda: cell.initial_carry((B,), jnp.float64))
    carry0 = _noisy(carry0, rng, 0.3)
    lengths = np.array([(T * (B - 1 - b)) // (B - 1) for b in range(B)])  # T, …, 0

    self.check_carry(params, carry0, xs[0], B)
    runs = self.guarded(
      "fast_step", "fast_step", lambda: jax.jit(self.forwards)(params, xs, carry0, lengths)
    )
    self.check_fast_step(params, xs, carry0, runs["plain"])
    self.check_lengths(params, xs, carry0, lengths, runs["padded"])
    self.check_reverse(params, xs, carry0, lengths, runs)
    gy = rng.standard_normal(np.shape(runs["plain"][1]))
    gc = _noisy(jax.tree.map(np.zeros_like, runs["plain"][0]), rng, 1.0)
    self.check_backward(params, xs, carry0, lengths, gy, gc)
    self.check_state_jacobian(params, xs[:, 0], jax.tree.map(lambda c: c[0], carry0))
    self.check_state_diagonal(params, xs[:, 0], jax.tree.map(lambda c: c[0], carry0))
    return self.report

  def forwards(
    self, params: Params, xs: Array, carry0: Carry, lengths: Array
  ) -> dict[str, tuple[Carry, Array]]:
    """Every forward run the checks compare, in one compiled program."""
    cell = self.cell
    flipped_carry, flipped_ys = scan(cell, params, xs[::-1], carry0)
    return {
      "plain": scan(cell, params, xs, carry0, backward="autodiff"),
      "padded": scan(cell, params, xs, carry0, lengths=lengths),
      "reversed": scan(cell, params, xs, carry0, lengths=lengths, reverse=True),
      "reversed_full": scan(cell, params, xs, carry0, reverse=True),
      "flipped": (flipped_carry, flipped_ys[::-1]),
    }

  def check_carry(self, params: Params, carry0: Carry, x: np.ndarray, B: int) -> None:
    cell = self.cell
    compared = "the carry a step returns and the carry it is given"
    new, y = self.guarded("carry", "step", lambda: jax.eval_shape(cell.step, params, carry0, x))

    def fast(p: Params, c: Carry, x: Array) -> Any:
      return cell.fast_step(p, c, cell.project(p, x))

    fast_new, _ = self.guarded(
      "carry", "fast_step", lambda: jax.eval_shape(fast, params, carry0, x)
    )
    want = _named(carry0, "carry")
    for slot, got in (("step", new), ("fast_step", fast_new)):
      have = _named(got, "carry")
      got_struct: Any = jax.tree.structure(got)
      want_struct: Any = jax.tree.structure(carry0)
      problem, leaf = "", "<structure>"
      if got_struct != want_struct:
        problem = f"{slot} returned a carry of structure {got_struct}, given {want_struct}"
      else:
        for (name, g), (_, w) in zip(have, want, strict=True):
          if tuple(g.shape) != np.shape(w) or not jnp.issubdtype(g.dtype, jnp.floating):
            problem = f"{slot} returned {name} as {tuple(g.shape)} {g.dtype}, given {np.shape(w)}"
            leaf = name
            break
      if problem:
        self.report["carry"] = CellCheck(slot, compared, np.inf, np.inf, False, leaf)
        raise self.fail(
          "carry", slot, leaf, f"{problem}; a step must keep the carry's structure and shapes"
        )
    if tuple(y.shape) != (B, cell.hidden_size) or not jnp.issubdtype(y.dtype, jnp.floating):
      self.report["carry"] = CellCheck("step", compared, np.inf, np.inf, False, "y")
      raise self.fail(
        "carry",
        "step",
        "y",
        f"step returned y as {tuple(y.shape)} {y.dtype}, but the cell declares hidden_size "
        f"{cell.hidden_size}: y must be floating [B, hidden_size] = {(B, cell.hidden_size)}",
      )
    self.report["carry"] = CellCheck("step", compared, 0.0, 0.0, True)

  def loop(self, params: Params, xs: np.ndarray, carry0: Carry) -> tuple[Carry, np.ndarray]:
    """``cell.step`` in a Python loop over ``xs: [T, B, I]`` (one compiled step)."""
    c, out = carry0, []
    for t in range(xs.shape[0]):
      c, y = self.step(params, c, xs[t])
      out.append(y)
    return c, (np.stack(out) if out else np.zeros((0, xs.shape[1], self.cell.hidden_size)))

  def check_fast_step(
    self, params: Params, xs: np.ndarray, carry0: Carry, run: tuple[Carry, Array]
  ) -> None:
    ref_carry, ref_ys = self.guarded("fast_step", "step", lambda: self.loop(params, xs, carry0))
    carry, ys = run
    self.record(
      "fast_step",
      "fast_step",
      "rnnjax.scan's fast path (project, fast_step, output) and step in a Python loop",
      _compare(
        [("ys", ys), *_named(carry, "carry")],
        [("ys", ref_ys), *_named(ref_carry, "carry")],
        self.rtol,
        self.atol,
      ),
      "the fast path must compute what step computes",
    )

  def alone(
    self, params: Params, xs: np.ndarray, carry0: Carry, lengths: np.ndarray, reverse: bool
  ) -> tuple[Carry, np.ndarray]:
    """Each sequence run alone, unpadded (flipped for ``reverse``), by ``step`` in a
    Python loop, laid out as a padded batch: zeros past each length."""
    T = xs.shape[0]
    carries, ys = [], []
    for b, L in enumerate(np.asarray(lengths).tolist()):
      x = xs[:L, b : b + 1]
      c0 = jax.tree.map(lambda c, b=b: c[b : b + 1], carry0)
      c, y = self.loop(params, x[::-1] if reverse else x, c0)
      y = y[::-1] if reverse else y
      ys.append(np.concatenate([y[:, 0], np.zeros((T - L, *np.shape(y)[2:]))]))
      carries.append(c)
    return jax.tree.map(lambda *c: np.concatenate(c), *carries), np.stack(ys, axis=1)

  def check_lengths(
    self,
    params: Params,
    xs: np.ndarray,
    carry0: Carry,
    lengths: np.ndarray,
    run: tuple[Carry, Array],
  ) -> None:
    ref_carry, ref_ys = self.guarded(
      "lengths", "step", lambda: self.alone(params, xs, carry0, lengths, False)
    )
    carry, ys = run
    self.record(
      "lengths",
      "lengths",
      f"a padded batch (lengths {np.asarray(lengths).tolist()}) and each sequence run alone",
      _compare(
        [("ys", ys), *_named(carry, "carry")],
        [("ys", ref_ys), *_named(ref_carry, "carry")],
        self.rtol,
        self.atol,
      ),
      "each batch row must run on its own (a step must not mix rows of the batch)",
    )

  def check_reverse(
    self,
    params: Params,
    xs: np.ndarray,
    carry0: Carry,
    lengths: np.ndarray,
    runs: dict[str, tuple[Carry, Array]],
  ) -> None:
    ref_carry, ref_ys = self.guarded(
      "reverse", "step", lambda: self.alone(params, xs, carry0, lengths, True)
    )
    carry, ys = runs["reversed"]
    full_carry, full_ys = runs["reversed_full"]
    flip_carry, flip_ys = runs["flipped"]
    got = [("ys", ys), *_named(carry, "carry")]
    got += [("ys (no lengths)", full_ys), *_named(full_carry, "carry (no lengths)")]
    want = [("ys", ref_ys), *_named(ref_carry, "carry")]
    want += [("ys (no lengths)", flip_ys), *_named(flip_carry, "carry (no lengths)")]
    self.record(
      "reverse",
      "reverse",
      "reverse=True and the flipped sequences",
      _compare(got, want, self.rtol, self.atol),
      "reverse=True must equal running each sequence flipped (inside its length)",
    )

  def check_backward(
    self,
    params: Params,
    xs: np.ndarray,
    carry0: Carry,
    lengths: np.ndarray,
    gy: np.ndarray,
    gc: Carry,
  ) -> None:
    cell = self.cell

    def grad(mode: Backward, padded: bool) -> Any:
      def loss(p: Params, x: Array, c0: Carry) -> Array:
        L = jnp.asarray(lengths) if padded else None
        carry, ys = scan(cell, p, x, c0, lengths=L, reverse=padded, backward=mode)
        pairs = zip(jax.tree.leaves(carry), jax.tree.leaves(gc), strict=True)
        return jnp.sum(ys * gy) + sum((jnp.sum(a * b) for a, b in pairs), jnp.zeros(()))

      return jax.grad(loss, argnums=(0, 1, 2))(params, xs, carry0)

    def all_grads() -> Any:
      return {(m, p): grad(m, p) for m in ("bptt", "autodiff") for p in (False, True)}

    grads = self.guarded("backward_step", "backward_step", jax.jit(all_grads))

    def named(g: Any, suffix: str) -> list[tuple[str, Any]]:
      dp, dx, dc = g
      leaves = [*_named(dp, "params"), ("xs", dx), *_named(dc, "carry0")]
      return [(n + suffix, v) for n, v in leaves]

    leaves: list[_Leaf] = []
    for padded, suffix in ((False, ""), (True, " (lengths, reverse)")):
      got, want = named(grads["bptt", padded], suffix), named(grads["autodiff", padded], suffix)
      leaves += _compare(got, want, self.rtol, self.atol)

    def slot(bad: list[_Leaf]) -> str:
      only_params = all(leaf.name.startswith("params") for leaf in bad)
      rule = only_params and cell.recurrent_grads is not None
      return "recurrent_grads" if rule else "backward_step"

    self.record(
      "backward_step",
      slot,
      'the gradients of backward="bptt" (the hand-written backward) and backward="autodiff"',
      leaves,
      "the hand-written backward must be the derivative of the fast path (when only the "
      "params' gradients are off, recurrent_grads is the suspect)",
    )

  def check_state_jacobian(self, params: Params, xs: np.ndarray, carry0: Carry) -> None:
    cell = self.cell
    if cell.state_jacobian is None:
      none = "nothing: the cell has no closed form (the tools use jax.jacfwd of step)"
      self.report["state_jacobian"] = CellCheck("state_jacobian", none, 0.0, 0.0, True, "", True)
      return

    def both() -> tuple[Array, Array]:
      closed = jac.step_jacobians(cell, params, xs, carry0, method="closed")
      return closed, jac.step_jacobians(cell, params, xs, carry0, method="jacfwd")

    closed, measured = self.guarded("state_jacobian", "state_jacobian", jax.jit(both))
    self.record(
      "state_jacobian",
      "state_jacobian",
      "the closed-form state_jacobian and jax.jacfwd of step (rnnjax.jacobian.step_jacobians)",
      _compare([("J", closed)], [("J", measured)], self.rtol, self.atol),
      "state_jacobian must be ∂s_t/∂s_{t-1} over the flattened carry "
      "(rnnjax.jacobian.flatten_state); J[t] belongs to step t + 1",
    )

  def check_state_diagonal(self, params: Params, xs: np.ndarray, carry0: Carry) -> None:
    cell = self.cell
    fn = cell.state_diagonal
    if fn is None:
      none = "nothing: the cell has no closed-form diagonal (quasi-DEER reads it off jax.jacfwd)"
      self.report["state_diagonal"] = CellCheck("state_diagonal", none, 0.0, 0.0, True, "", True)
      return

    def both() -> tuple[Array, Array]:
      prevs, _ = jac.trajectory(cell, params, xs, carry0)
      closed = jax.vmap(lambda c, x: fn(params, c, x))(prevs, xs)
      measured = jac.step_jacobians(cell, params, xs, carry0, method="jacfwd")
      return closed, jnp.diagonal(measured, axis1=-2, axis2=-1)

    closed, measured = self.guarded("state_diagonal", "state_diagonal", jax.jit(both))
    self.record(
      "state_diagonal",
      "state_diagonal",
      "the closed-form state_diagonal and the diagonal of jax.jacfwd of step",
      _compare([("diag", closed)], [("diag", measured)], self.rtol, self.atol),
      "state_diagonal (rnnjax.ClosedDiagonal) must be the diagonal of ∂s_t/∂s_{t-1} over "
      "the flattened carry, [S] for one example; diag[t] belongs to step t + 1",
    )


def _noisy(tree: Any, rng: np.random.Generator, scale: float) -> Any:
  """Floating leaves as float64 NumPy arrays plus ``scale``·N(0, 1) noise; other
  leaves as given."""

  def noisy(leaf: Any) -> Any:
    a = np.asarray(leaf)
    if not np.issubdtype(a.dtype, np.floating):
      return leaf
    return a.astype(np.float64) + scale * rng.standard_normal(a.shape)

  return jax.tree.map(noisy, tree)

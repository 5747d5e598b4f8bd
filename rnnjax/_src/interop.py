"""The implementation of `rnnjax.interop`, whose module docstring documents it.

Weights between rnnjax params and PyTorch layers (both ways) and flax cells.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, overload

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._src.cells.base import Cell
from rnnjax._src.cells.elman import ElmanParams, elman
from rnnjax._src.cells.gru import GRUParams, gru
from rnnjax._src.cells.lstm import LSTMCarry, LSTMParams, lstm
from rnnjax._src.cells.zoo import LSTMProjectedParams, lstm_projected

__all__ = ["carries_from_torch", "carries_to_torch", "from_flax", "from_torch", "to_torch"]

CellParams = ElmanParams | GRUParams | LSTMParams | LSTMProjectedParams
"""The params of a built-in cell."""

_GATES = {"elman": "h", "gru": "rzn", "lstm": "ifgo"}
_NONLINEARITIES = ("tanh", "relu")
_KEY = re.compile(r"^(weight_ih|weight_hh|weight_hr|bias_ih|bias_hh)_l(\d+)(_reverse)?$")


def _np(a: Any) -> np.ndarray:
  if hasattr(a, "detach"):
    a = a.detach().cpu()
  return np.asarray(a)


def _dims(shape: tuple[int | None, ...], names: str) -> str:
  """``(16, 3), "4H, I"`` -> ``"(16, 3) = [4H, I]"``; unknown sizes read as letters."""
  sizes = [n if s is None else str(s) for s, n in zip(shape, names.split(", "), strict=True)]
  return f"({', '.join(sizes)}{',' if len(sizes) == 1 else ''}) = [{names}]"


def _layer_from_torch(
  kind: str,
  state: dict[str, Any],
  layer: int,
  suffix: str,
  dtype: Any,
  input_size: int | None = None,
  sizes: tuple[int, int | None] | None = None,
) -> CellParams:
  """One direction of one layer; ``input_size`` and ``sizes = (H, P)`` pin the
  expected shapes when the layer sits in a stack."""
  k = len(_GATES[kind])
  G = f"{k}H" if k > 1 else "H"

  def key(name: str) -> str:
    return f"{name}_l{layer}{suffix}"

  w_ih = _np(state[key("weight_ih")]) if key("weight_ih") in state else None
  w_hh = _np(state[key("weight_hh")]) if key("weight_hh") in state else None
  # H from the layer's own weights where the stack does not fix it
  H, P = sizes if sizes is not None else (None, None)
  if H is None and w_ih is not None and w_ih.ndim == 2 and w_ih.shape[0] % k == 0:
    H = w_ih.shape[0] // k
  if H is None and w_hh is not None and w_hh.ndim == 2 and w_hh.shape[0] % k == 0:
    H = w_hh.shape[0] // k
  if sizes is None and key("weight_hr") in state:
    P = _np(state[key("weight_hr")]).shape[0]
  if input_size is None and w_ih is not None and w_ih.ndim == 2:
    input_size = w_ih.shape[1]
  kH = None if H is None else k * H
  R = "P" if P is not None else "H"
  expected = {
    "weight_ih": ((kH, input_size), f"{G}, I"),
    "weight_hh": ((kH, P if P is not None else H), f"{G}, {R}"),
    "bias_ih": ((kH,), G),
    "bias_hh": ((kH,), G),
    "weight_hr": ((P, H), "P, H"),
  }

  def want(name: str) -> str:
    shape, names = expected[name]
    return f"{key(name)} {_dims(shape, names)}"

  missing = [key(n) for n in ("weight_ih", "weight_hh") if key(n) not in state]
  if missing:
    raise ValueError(
      f"from_torch: state has no {missing}; expected "
      f"{' and '.join(want(n) for n in ('weight_ih', 'weight_hh') if key(n) in missing)} "
      f"for a {kind} layer; keys are {sorted(state)}"
    )
  if key("weight_hr") in state and kind != "lstm":
    raise ValueError(
      f"from_torch: {key('weight_hr')} (a projection, nn.LSTM(proj_size=P)) "
      f"needs kind='lstm', got {kind!r}"
    )
  assert w_ih is not None and w_hh is not None  # neither is missing
  if kH is None:
    raise ValueError(
      f"from_torch: {key('weight_ih')} has shape {w_ih.shape} and {key('weight_hh')} "
      f"{w_hh.shape}, but a {kind} layer has {k} gate blocks: expected "
      f"{want('weight_ih')} with a first axis divisible by {k}; check kind="
    )
  biases = [key(n) in state for n in ("bias_ih", "bias_hh")]
  if biases[0] != biases[1]:
    absent = "bias_hh" if biases[0] else "bias_ih"
    raise ValueError(
      f"from_torch: state has {key('bias_ih' if biases[0] else 'bias_hh')} but no "
      f"{key(absent)}; expected {want(absent)} (both biases, or neither for bias=False)"
    )
  arrays = {n: _np(state[key(n)]) for n in expected if key(n) in state}
  for name, a in arrays.items():
    shape, _ = expected[name]
    if a.ndim != len(shape) or any(
      w is not None and w != g for w, g in zip(shape, a.shape, strict=True)
    ):
      raise ValueError(
        f"from_torch: {key(name)} has shape {tuple(a.shape)}, expected {want(name)} for a "
        f"{kind} layer (k={k} gate blocks); check kind= and that the layers' sizes chain"
      )
  w_ih, w_hh = arrays["weight_ih"], arrays["weight_hh"]
  b_ih = arrays.get("bias_ih", np.zeros(kH, w_ih.dtype))
  b_hh = arrays.get("bias_hh", np.zeros(kH, w_hh.dtype))

  def cast(a: np.ndarray) -> jnp.ndarray:
    return jnp.asarray(a, dtype)

  if "weight_hr" in arrays:
    w_hr = arrays["weight_hr"]  # [P, H]
    return LSTMProjectedParams(cast(w_ih.T), cast(w_hh.T), cast(b_ih + b_hh), cast(w_hr.T))
  if sizes is not None and P is not None:
    raise ValueError(
      f"from_torch: state has no {key('weight_hr')}; expected {want('weight_hr')}, as "
      f"every layer of an nn.LSTM(proj_size=P) has one"
    )
  if kind == "gru":
    H = kH // 3
    b = b_ih + np.concatenate([b_hh[: 2 * H], np.zeros(H, b_hh.dtype)])
    return GRUParams(cast(w_ih.T), cast(w_hh.T), cast(b), cast(b_hh[2 * H :]))
  params_type = ElmanParams if kind == "elman" else LSTMParams
  return params_type(cast(w_ih.T), cast(w_hh.T), cast(b_ih + b_hh))


def _stack_from_torch(kind: str, state: dict[str, Any], dtype: Any, nonlinearity: str) -> list[Any]:
  """Every layer of a PyTorch RNN/GRU/LSTM state dict as `rnnjax.stacked` layers."""
  if nonlinearity not in _NONLINEARITIES:
    raise ValueError(
      f"from_torch: nonlinearity must be one of {_NONLINEARITIES} (nn.RNN's), got {nonlinearity!r}"
    )
  matches = [m for m in map(_KEY.match, state) if m]
  if not matches:
    raise ValueError(
      f"from_torch: state has no PyTorch RNN keys (weight_ih_l0, ...); keys are "
      f"{sorted(state)}; pass the RNN module's own state_dict() (strip a prefix such as 'rnn.')"
    )
  num_layers = 1 + max(int(m.group(2)) for m in matches)
  directions = ("", "_reverse") if any(m.group(3) for m in matches) else ("",)
  first = _layer_from_torch(kind, state, 0, "", dtype)
  H = first.w_x.shape[1] // len(_GATES[kind])
  P = first.w_r.shape[1] if isinstance(first, LSTMProjectedParams) else None
  if kind == "elman":
    cell = elman(H, nonlinearity)
  elif kind == "gru":
    cell = gru(H, reset="after")
  else:
    cell = lstm(H) if P is None else lstm_projected(H, proj_size=P)
  layers: list[Any] = []
  size = None
  for l in range(num_layers):
    pair = [
      (cell, _layer_from_torch(kind, state, l, sfx, dtype, size, (H, P))) for sfx in directions
    ]
    layers.append(pair[0] if len(pair) == 1 else tuple(pair))
    size = len(directions) * (H if P is None else P)
  return layers


@overload
def from_torch(
  kind: str,
  state: dict[str, Any],
  layer: None = None,
  suffix: str | None = None,
  dtype: Any = jnp.float32,
  *,
  nonlinearity: str = "tanh",
) -> list[Any]: ...


@overload
def from_torch(
  kind: str,
  state: dict[str, Any],
  layer: int,
  suffix: str | None = None,
  dtype: Any = jnp.float32,
  *,
  nonlinearity: str = "tanh",
) -> CellParams: ...


def from_torch(
  kind: str,
  state: dict[str, Any],
  layer: int | None = None,
  suffix: str | None = None,
  dtype: Any = jnp.float32,
  *,
  nonlinearity: str = "tanh",
) -> CellParams | list[Any]:
  """A torch ``nn.RNN/GRU/LSTM`` ``state_dict()`` as rnnjax layers: the whole
  module by default, one direction of one layer when ``layer`` is given.

  Args:
    kind: ``"elman"``, ``"gru"`` (use ``reset="after"``) or ``"lstm"`` (an
      ``nn.LSTM(proj_size=P)``, detected by ``weight_hr_l{layer}{suffix}`` in
      ``state``, maps to ``rj.lstm_projected(H, proj_size=P)``).
    state: the module's ``state_dict()`` (or a dict of arrays with its keys).
    layer: ``None`` (default): every layer and direction, as layers that
      `rnnjax.stacked` runs (and `to_torch` writes back); an int: only that
      layer's (``_l{layer}``) params.
    suffix: with an int ``layer``, ``"_reverse"`` for the backward direction
      of a bidirectional layer (default ``""``, the forward one).
    dtype: the dtype of the returned arrays.
    nonlinearity: with ``layer=None`` and ``kind="elman"``, nn.RNN's
      ``nonlinearity`` (``"tanh"`` or ``"relu"``), for the returned cells.

  Returns:
    By default (``layer=None``): one entry per layer for `rnnjax.stacked`
    (with ``merge="concat"``, PyTorch's): ``(cell, params)``, or for a
    bidirectional module ``((cell, params_fwd), (cell, params_bwd))``, where
    ``cell`` is ``rj.elman(H, nonlinearity)``, ``rj.gru(H, reset="after")``,
    ``rj.lstm(H)`` or ``rj.lstm_projected(H, proj_size=P)``; a list even for
    a one-layer module.

    With an int ``layer``: `rnnjax.ElmanParams`, `rnnjax.GRUParams` (with
    ``b_hn``), `rnnjax.LSTMParams` or (with a projection)
    `rnnjax.LSTMProjectedParams`, in the row-vector layout; missing biases
    (``bias=False``) count as zeros.

  Raises:
    ValueError: ``kind`` is unknown; ``suffix`` comes without ``layer``;
      ``state`` lacks a layer's weight, or has
      one bias of a pair without the other (the message names the key and
      the shape expected there); an array has another shape than the layout
      needs (named likewise; with ``layer=None`` the sizes must chain as in
      a PyTorch module: one H and P for all layers, layer ``l > 0`` reading
      ``directions · (P or H)`` features); or a projection ``weight_hr`` comes
      with a kind other than ``"lstm"``.

  Examples:
    A whole two-layer module (a state dict of NumPy arrays works as well as
    a torch module's), ready for `rnnjax.stacked`:

    >>> import numpy as np, rnnjax as rj
    >>> H, I = 4, 3
    >>> state = {"weight_ih_l0": np.ones((3 * H, I)), "weight_hh_l0": np.ones((3 * H, H)),
    ...          "weight_ih_l1": np.ones((3 * H, H)), "weight_hh_l1": np.ones((3 * H, H))}
    >>> layers = rj.interop.from_torch("gru", state)
    >>> [(cell, p.w_x.shape) for cell, p in layers]
    [(rnnjax.gru(4, reset='after'), (3, 12)), (rnnjax.gru(4, reset='after'), (4, 12))]

    One layer's params only:

    >>> params = rj.interop.from_torch("gru", state, layer=1)
    >>> params.w_x.shape, params.w_h.shape, params.b_hn.shape
    ((4, 12), (4, 12), (4,))

    With ``weight_hr_l0`` (``nn.LSTM(I, H, proj_size=P)``) the params are
    those of ``rj.lstm_projected(H, proj_size=P)``:

    >>> P = 2
    >>> state = {"weight_ih_l0": np.ones((4 * H, I)), "weight_hh_l0": np.ones((4 * H, P)),
    ...          "weight_hr_l0": np.ones((P, H))}
    >>> [(cell, p)] = rj.interop.from_torch("lstm", state)
    >>> cell, type(p).__name__, p.w_h.shape, p.w_r.shape
    (rnnjax.lstm_projected(2, cell_size=4, forget_bias=1.0), 'LSTMProjectedParams', (2, 16), (4, 2))
  """
  if kind not in _GATES:
    raise ValueError(f"from_torch: unknown kind {kind!r}; expected one of {sorted(_GATES)}")
  if layer is None:
    if suffix is not None:
      raise ValueError(
        f"from_torch: suffix={suffix!r} picks one direction of one layer, so it needs "
        f"layer=...; pass layer=0 (or the layer you want), or drop suffix to read the "
        f"whole module (both directions)"
      )
    return _stack_from_torch(kind, state, dtype, nonlinearity)
  return _layer_from_torch(kind, state, layer, suffix or "", dtype)


def _torch_kind(cell: Cell, params: Any, where: str) -> tuple[str, tuple[Any, ...]]:
  """PyTorch's module kind for ``(cell, params)`` and what must agree across
  layers: ``(kind, (H, P, nonlinearity))``."""
  if isinstance(params, LSTMProjectedParams):
    return "lstm", (params.w_r.shape[0], params.w_r.shape[1], None)
  if isinstance(params, LSTMParams):
    return "lstm", (params.w_h.shape[0], None, None)
  if isinstance(params, GRUParams):
    if params.b_hn is None:
      raise ValueError(
        f"to_torch: {where} is {cell!r}, a GRU with reset='before', which PyTorch does "
        f"not have; nn.GRU is rj.gru(H, reset='after') (params with b_hn)"
      )
    return "gru", (params.w_h.shape[0], None, None)
  if isinstance(params, ElmanParams):
    act = getattr(cell.activation, "name", None)
    if act not in _NONLINEARITIES:
      raise ValueError(
        f"to_torch: {where} is {cell!r} with activation {act!r}; nn.RNN has "
        f"nonlinearity {' or '.join(map(repr, _NONLINEARITIES))} only"
      )
    return "elman", (params.w_h.shape[0], None, act)
  raise TypeError(
    f"to_torch: {where} has params {type(params).__name__}; PyTorch's layers are "
    f"rnnjax's ElmanParams (nn.RNN), GRUParams (nn.GRU), LSTMParams and "
    f"LSTMProjectedParams (nn.LSTM)"
  )


def _is_layer(x: Any) -> bool:
  return isinstance(x, (tuple, list)) and len(x) == 2 and isinstance(x[0], Cell)


def to_torch(layers: Any) -> dict[str, np.ndarray]:
  """A PyTorch ``nn.RNN/GRU/LSTM`` ``state_dict()`` for rnnjax layers, as NumPy.

  The inverse of ``from_torch(kind, state, layer=None)``; torch is not
  imported. Load it with ``module.load_state_dict({k: torch.from_numpy(v) for
  k, v in state.items()})`` into ``nn.LSTM(I, H, num_layers=L,
  bidirectional=..., proj_size=P)`` (``nn.GRU(I, H, ...)``, ``nn.RNN(I, H,
  nonlinearity=..., ...)``) with the default ``bias=True``.

  Each direction of layer ``l`` writes ``weight_ih_l{l} = w_x.T``,
  ``weight_hh_l{l} = w_h.T``, ``bias_ih_l{l} = b``, ``bias_hh_l{l} = 0``
  (the GRU's: ``[0, 0, b_hn]``) and, projected, ``weight_hr_l{l} = w_r.T``;
  the backward direction's keys end in ``_reverse``. Keys come in
  ``state_dict()``'s order.

  Args:
    layers: one ``(cell, params)`` layer, or a list of layers as
      `rnnjax.stacked` takes them (and ``rj.init_stacked`` makes them), each
      ``(cell, params)`` or bidirectional ``((cell, params_fwd), (cell,
      params_bwd))``, merged by concatenation. A single bidirectional layer
      goes in a list: ``[((cell, pf), (cell, pb))]``.

  Returns:
    ``{key: array}``, writable C-contiguous NumPy arrays in the params' dtype.

  Raises:
    TypeError: params of a cell PyTorch does not have (only ``rj.elman``
      with tanh or relu, ``rj.gru(H, reset="after")``, ``rj.lstm`` and
      ``rj.lstm_projected``).
    ValueError: a GRU with ``reset="before"`` or an Elman cell with another
      activation; layers that one PyTorch module cannot hold (kinds, H, P or
      the nonlinearity differ, some layers bidirectional and others not), or
      whose sizes do not chain (layer ``l > 0`` must read ``directions · (P
      or H)`` features); each message names the layer.

  Examples:
    >>> import jax, rnnjax as rj
    >>> layers = rj.init_stacked(jax.random.key(0), [rj.lstm(4), rj.lstm(4)], 3, bidirectional=True)
    >>> state = rj.interop.to_torch(layers)
    >>> [(k, v.shape) for k, v in state.items()][:5]  # doctest: +NORMALIZE_WHITESPACE
    [('weight_ih_l0', (16, 3)), ('weight_hh_l0', (16, 4)), ('bias_ih_l0', (16,)),
     ('bias_hh_l0', (16,)), ('weight_ih_l0_reverse', (16, 3))]
    >>> back = rj.interop.from_torch("lstm", state, layer=None)
    >>> bool((back[1][1][1].w_h == layers[1][1][1].w_h).all())
    True
  """
  if _is_layer(layers):
    layers = [layers]
  if isinstance(layers, tuple) and len(layers) == 2 and all(map(_is_layer, layers)):
    raise ValueError(
      "to_torch: a tuple of two (cell, params) pairs is ambiguous: pass "
      "[((cell, params_fwd), (cell, params_bwd))] for one bidirectional layer, or "
      "[(cell, params_1), (cell, params_2)] for two stacked layers"
    )
  if not isinstance(layers, Sequence) or not layers:
    raise ValueError(
      "to_torch: layers must be a (cell, params) pair or a non-empty list of layers as "
      f"rj.stacked takes them, got {type(layers).__name__}"
    )
  state: dict[str, np.ndarray] = {}
  first: tuple[Any, ...] | None = None
  size = None
  for l, entry in enumerate(layers):
    bidir = not _is_layer(entry)
    if bidir and not (
      isinstance(entry, (tuple, list)) and len(entry) == 2 and all(map(_is_layer, entry))
    ):
      raise ValueError(
        f"to_torch: layer {l} is neither (cell, params) nor ((cell, params_fwd), "
        f"(cell, params_bwd)); got {type(entry).__name__}"
      )
    directions = list(zip(("", "_reverse"), entry if bidir else [entry], strict=False))
    for sfx, (cell, params) in directions:
      where = f"layer {l}{' (reverse)' if sfx else ''}"
      kind, sizes = _torch_kind(cell, params, where)
      this = (kind, *sizes, bidir)
      if first is None:
        first = this
      elif this != first:
        names = ("kind", "H", "P", "nonlinearity", "bidirectional")
        diff = ", ".join(
          f"{n} {a!r} vs {b!r}" for n, a, b in zip(names, this, first, strict=True) if a != b
        )
        raise ValueError(
          f"to_torch: {where} does not fit in the same PyTorch module as layer 0 ({diff}); "
          f"nn.RNN/GRU/LSTM has one kind, hidden_size, proj_size, nonlinearity and "
          f"bidirectional flag for all its layers"
        )
      w_x = np.asarray(params.w_x)
      if size is not None and w_x.shape[0] != size:
        raise ValueError(
          f"to_torch: {where} has w_x of shape {w_x.shape}, so weight_ih_l{l}{sfx} would be "
          f"{w_x.shape[::-1]}; PyTorch's layer {l} reads the previous layer's "
          f"{size} features (directions · {'P' if sizes[1] else 'H'}), so it expects "
          f"({w_x.shape[1]}, {size})"
        )
      b = np.asarray(params.b)
      b_hh = np.zeros_like(b)
      if kind == "gru":
        b_hh[2 * sizes[0] :] = np.asarray(params.b_hn)
      key = f"_l{l}{sfx}"
      state[f"weight_ih{key}"] = w_x.T.copy()
      state[f"weight_hh{key}"] = np.asarray(params.w_h).T.copy()
      state[f"bias_ih{key}"] = b.copy()
      state[f"bias_hh{key}"] = b_hh
      if isinstance(params, LSTMProjectedParams):
        state[f"weight_hr{key}"] = np.asarray(params.w_r).T.copy()
    assert first is not None
    H, P = first[1], first[2]
    size = len(directions) * (H if P is None else P)
  return state


def _directions(layers: Any, what: str) -> tuple[list[list[Any]], bool]:
  """``layers`` (one ``(cell, params)`` or a list as `rnnjax.stacked` takes
  them) as one list of ``(cell, params)`` per layer, and whether a single
  layer was given."""
  if _is_layer(layers):
    return [[layers]], True
  if not isinstance(layers, Sequence) or not layers:
    raise ValueError(
      f"{what}: layers must be a (cell, params) pair or the list from_torch returns, "
      f"got {type(layers).__name__}"
    )
  out = []
  for l, entry in enumerate(layers):
    if _is_layer(entry):
      out.append([entry])
    elif isinstance(entry, (tuple, list)) and len(entry) == 2 and all(map(_is_layer, entry)):
      out.append(list(entry))
    else:
      raise ValueError(
        f"{what}: layer {l} is neither (cell, params) nor ((cell, params_fwd), "
        f"(cell, params_bwd)); got {type(entry).__name__}"
      )
  return out, False


def carries_from_torch(layers: Any, h0: Any, c0: Any = None) -> Any:
  """PyTorch's ``h0`` (and ``c0``) as the initial carries rnnjax's layers take.

  PyTorch stacks every layer's and direction's state on a leading axis,
  ``[num_layers·directions, B, H_out]`` (``[num_layers·directions, H_out]``
  unbatched), layer 0 forward first, then its ``_reverse`` direction, then
  layer 1; the LSTM's ``c0`` likewise with ``H``. rnnjax takes one carry per
  layer (a ``(fwd, bwd)`` pair for a bidirectional one; ``rj.LSTMCarry(h,
  c)`` for the LSTM). The one line::

      carries, ys = rj.stacked(layers, xs, rj.interop.carries_from_torch(layers, h0, c0))

  runs ``module(xs, (h0, c0))`` (``module(xs, h0)`` for ``nn.RNN``/``nn.GRU``),
  and ``rj.interop.carries_to_torch(carries)`` gives back its ``(h_n, c_n)``.

  Args:
    layers: the list ``from_torch(kind, state)`` returns (any list that
      `rnnjax.stacked` takes), or one ``(cell, params)`` layer, whose carry is
      then returned alone (PyTorch's ``[1, B, H]`` for `rnnjax.scan`).
    h0: ``[num_layers·directions, B, H_out]`` or ``[num_layers·directions,
      H_out]`` (NumPy, jax or torch; ``H_out`` is ``proj_size`` for a
      projected LSTM, else ``H``).
    c0: the LSTM's ``[num_layers·directions, B, H]`` (or unbatched); None
      for ``nn.RNN``/``nn.GRU``.

  Returns:
    A list with one carry per layer (a ``(carry_fwd, carry_bwd)`` pair for a
    bidirectional layer), or one carry for a single ``(cell, params)``; with
    unbatched ``h0`` the carries have no batch axis, as ``cell.initial_carry(())``.

  Raises:
    ValueError: ``layers`` are not layers; ``h0``/``c0`` have another rank or
      leading size than the layers need; ``c0`` is missing for an LSTM or
      given for a cell without one. Each message names the shapes and the fix.

  Examples:
    >>> import jax, jax.numpy as jnp, rnnjax as rj
    >>> layers = rj.init_stacked(jax.random.key(0), [rj.lstm(4)] * 2, 3, bidirectional=True)
    >>> h0, c0 = jnp.ones((4, 2, 4)), jnp.zeros((4, 2, 4))  # [num_layers·2, B, H]
    >>> carries = rj.interop.carries_from_torch(layers, h0, c0)
    >>> len(carries), carries[1][1].h.shape
    (2, (2, 4))
    >>> h_n, c_n = rj.interop.carries_to_torch(carries)
    >>> bool((h_n == h0).all()), c_n.shape
    (True, (4, 2, 4))
  """
  what = "carries_from_torch"
  per_layer, single = _directions(layers, what)
  n = sum(len(d) for d in per_layer)
  h0 = jnp.asarray(_np(h0))
  c0 = None if c0 is None else jnp.asarray(_np(c0))
  cell0 = per_layer[0][0][0]
  lstm_like = isinstance(cell0.initial_carry(()), LSTMCarry)
  if lstm_like and c0 is None:
    raise ValueError(
      f"{what}: {cell0!r} has an LSTM carry (h, c), so pass c0 as well "
      f"(nn.LSTM's (h0, c0), each [num_layers·directions, B, ·])"
    )
  if not lstm_like and c0 is not None:
    raise ValueError(
      f"{what}: c0 is given but {cell0!r}'s carry is h alone (nn.RNN/nn.GRU take h0 only); drop c0"
    )
  for name, a in (("h0", h0), ("c0", c0)):
    if a is None:
      continue
    if a.ndim not in (2, 3) or a.shape[0] != n:
      raise ValueError(
        f"{what}: {name} has shape {tuple(a.shape)}, but these {len(per_layer)} layer(s) "
        f"with {len(per_layer[0])} direction(s) need [num_layers·directions = {n}, B, "
        f"{'H' if name == 'c0' else 'H_out'}] (or [{n}, ·] unbatched), PyTorch's layout; "
        f"for one layer from rj.scan pass carry[None] or use carries_to_torch"
      )
  batch = h0.shape[1:-1]
  out: list[Any] = []
  k = 0
  for l, dirs in enumerate(per_layer):
    pair = []
    for cell, _ in dirs:
      want = cell.initial_carry(batch, h0.dtype)
      if lstm_like:
        assert c0 is not None
        carry: Any = LSTMCarry(h0[k], c0[k])
      else:
        carry = h0[k]
      for got, w, name in zip(
        jax.tree.leaves(carry), jax.tree.leaves(want), ("h0", "c0"), strict=False
      ):
        if got.shape != w.shape:
          raise ValueError(
            f"{what}: {name}[{k}] (layer {l}) has shape {tuple(got.shape)} but {cell!r} "
            f"needs {tuple(w.shape)}; check that h0/c0 come from this module"
          )
      pair.append(carry)
      k += 1
    out.append(pair[0] if len(pair) == 1 else tuple(pair))
  return out[0] if single else out


def carries_to_torch(carries: Any) -> Any:
  """rnnjax's final carries in PyTorch's layout, the inverse of `carries_from_torch`.

  Args:
    carries: what `rnnjax.stacked` returns (one carry per layer, a
      ``(fwd, bwd)`` pair for a bidirectional layer), or one layer's carry
      from `rnnjax.scan`.

  Returns:
    ``h_n: [num_layers·directions, B, H_out]`` for ``nn.RNN``/``nn.GRU``, or
    ``(h_n, c_n)`` for LSTM carries, as PyTorch's modules return them.

  Raises:
    ValueError: ``carries`` is empty.

  Examples:
    >>> import jax.numpy as jnp, rnnjax as rj
    >>> rj.interop.carries_to_torch(jnp.ones((2, 4))).shape   # one nn.GRU layer
    (1, 2, 4)
  """
  if isinstance(carries, LSTMCarry) or not isinstance(carries, (list, tuple)):
    carries = [carries]
  flat: list[Any] = []
  for c in carries:
    if isinstance(c, tuple) and not isinstance(c, LSTMCarry):
      flat.extend(c)
    else:
      flat.append(c)
  if not flat:
    raise ValueError("carries_to_torch: carries is empty; pass what rj.stacked returned")
  if isinstance(flat[0], LSTMCarry):
    return jnp.stack([c.h for c in flat]), jnp.stack([c.c for c in flat])
  return jnp.stack([jnp.asarray(c) for c in flat])


def _value(a: Any) -> Any:
  """An array from a flax ``nnx.Variable`` (``nnx.state(cell)``'s leaves) or an array."""
  return a.get_value() if hasattr(a, "get_value") else a


def from_flax(kind: str, params: Any) -> CellParams:
  """Params for ``rj.<kind>`` from a flax cell's params, linen or NNX.

  Args:
    kind: ``"elman"`` (``SimpleCell``), ``"gru"`` (``GRUCell``, use
      ``reset="after"``), ``"lstm"`` (``LSTMCell`` or ``OptimizedLSTMCell``).
    params: a linen cell's ``variables["params"]``: ``{"i": {"kernel",
      "bias"}, "h": ...}`` for ``SimpleCell``, one ``{"kernel"[, "bias"]}``
      dict per gate (``"ir"``, ``"hr"``, ...) for the gated cells; or an NNX
      cell's ``nnx.state(cell, nnx.Param)`` (or its ``nnx.to_pure_dict``):
      ``{"dense_i", "dense_h"}`` for ``nnx.SimpleCell``, ``nnx.GRUCell`` and
      ``nnx.OptimizedLSTMCell`` (gate blocks side by side, as rnnjax's), per
      gate (``"ii"``, ``"if_"``, ...) for ``nnx.LSTMCell``.

  Returns:
    `rnnjax.ElmanParams`, `rnnjax.GRUParams` (with ``b_hn``) or
    `rnnjax.LSTMParams`; the gates' biases summed where rnnjax keeps one,
    missing biases as zeros. (``nnx.SimpleCell(residual=True)`` adds ``h``
    inside the activation, which ``rj.elman`` does not.)

  Raises:
    ValueError: ``kind`` is unknown.
  """
  if kind not in _GATES:
    raise ValueError(f"from_flax: unknown kind {kind!r}; expected one of {sorted(_GATES)}")

  def cat(arrs: list[Any]) -> Any:
    return jnp.concatenate(arrs, axis=-1)

  def kernel(name: str) -> Any:
    return jnp.asarray(_value(params[name]["kernel"]))

  def bias(name: str) -> Any:
    if "bias" in params[name]:
      return jnp.asarray(_value(params[name]["bias"]))
    k = kernel(name)
    return jnp.zeros(k.shape[-1], k.dtype)

  if "dense_i" in params:  # NNX: one Linear for x, one for h, gate blocks side by side
    w_x, w_h = kernel("dense_i"), kernel("dense_h")
    b_i, b_h = bias("dense_i"), bias("dense_h")
    if kind == "gru":  # n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
      H = w_h.shape[0]
      b = b_i + jnp.concatenate([b_h[: 2 * H], jnp.zeros(H, b_h.dtype)])
      return GRUParams(w_x, w_h, b, b_h[2 * H :])
    params_type = ElmanParams if kind == "elman" else LSTMParams
    return params_type(w_x, w_h, b_i + b_h)
  if kind == "elman":
    return ElmanParams(kernel("i"), kernel("h"), bias("i") + bias("h"))
  if "if_" in params:  # nnx.LSTMCell names its forget-gate input Linear if_
    params = {("if" if name == "if_" else name): v for name, v in params.items()}
  gates = _GATES[kind]
  w_x = cat([kernel("i" + g) for g in gates])
  w_h = cat([kernel("h" + g) for g in gates])
  if kind == "gru":
    b = cat([bias("ir") + bias("hr"), bias("iz") + bias("hz"), bias("in")])
    return GRUParams(w_x, w_h, b, bias("hn"))
  return LSTMParams(w_x, w_h, cat([bias("i" + g) + bias("h" + g) for g in gates]))

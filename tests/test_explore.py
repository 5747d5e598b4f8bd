"""The explorer's Python side: quantisation, the hypothesis-selection formulas
the page's JavaScript is held to (tests/test_explore_browser.py), the
gradient-flow export against products of step Jacobians, and the page."""

import base64
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.apps import charlm, cli, data, explore, interpret
from rnnjax.apps.models import char_lm, readout


def test_quantise_round_trip_within_half_a_step():
  rng = np.random.default_rng(0)
  states = rng.normal(size=(30, 4)) * [1.0, 5.0, 0.01, 0.0]
  q, scale = explore.quantise(states)
  assert q.dtype == np.uint8 and q.shape == (30, 4)
  np.testing.assert_allclose(scale[:3], np.abs(states[:, :3]).max(0))
  assert scale[3] == 1.0 and np.all(q[:, 3] == 128)  # an all-zero cell: 0 exactly
  err = np.abs(explore.dequantise(q, scale) - states)
  assert np.all(err <= scale / 254 + 1e-12)
  with pytest.raises(ValueError, match=r"states must be \[N, H\], got shape \(3,\)"):
    explore.quantise(np.zeros(3))


def _planted(n=120, h=6, seed=0):
  rng = np.random.default_rng(seed)
  states = 0.3 * rng.normal(size=(n, h))
  states[:, 2] = -0.5
  states[40:50, 2] = 1.0  # on exactly over [40, 49]
  states[:, 4] = -states[:, 2] + 0.01 * rng.normal(size=n)  # its mirror image
  return explore.quantise(states)[0]


def test_range_scores_rank_the_planted_cell_and_its_mirror():
  q = _planted()
  scores = explore.range_scores(q, 40, 49, pad=5)
  a = explore.normalised(q)
  # by hand for cell 2: the correlation with the selection over 35..54 (1 on 40..49)
  considered = np.r_[35:55]
  indicator = (considered >= 40) & (considered < 50)
  r = np.corrcoef(a[considered, 2], indicator)[0, 1]
  assert scores["score"][2] == pytest.approx(r, rel=1e-12)
  assert scores["inside"][2] == pytest.approx(a[40:50, 2].mean())
  assert scores["around"][2] == pytest.approx(a[np.r_[35:40, 50:55], 2].mean())
  assert explore.rank(scores)[:2] in ([2, 4], [4, 2])  # |score|: on there, or off there
  assert explore.rank(scores, "on")[0] == 2 and scores["score"][4] < 0
  assert explore.rank(scores, "off")[0] == 4  # the mirror: off there, on elsewhere
  match = explore.match_positions(q, [2], scores)
  assert match.tolist() == [40 <= t < 50 for t in range(120)]
  assert explore.match_positions(q, [2, 4], scores).sum() == 10  # the mirror agrees
  with pytest.raises(ValueError, match=r"the range \[50, 40\] must satisfy 0 <= start <= stop"):
    explore.range_scores(q, 50, 40)
  rest = explore.range_scores(q, 40, 49)  # elsewhere: the rest of the text
  assert rest["around"][2] == pytest.approx(np.r_[a[:40, 2], a[50:, 2]].mean())
  assert rest["score"][2] == pytest.approx(np.corrcoef(a[:, 2], match)[0, 1], rel=1e-12)
  assert explore.rank(rest, "on")[0] == 2
  with pytest.raises(
    ValueError, match=r"pad must be >= 0 or None \(the rest of the text\), got -1"
  ):
    explore.range_scores(q, 1, 2, pad=-1)
  with pytest.raises(ValueError, match="sign must be 'both', 'on' or 'off', got 'up'"):
    explore.rank(scores, "up")


def test_the_score_is_each_cells_correlation_with_the_selection():
  """Per-cell spread, not range: a cell whose range is set by one outlier but that
  moves cleanly with the selection outranks a wide, noisy one that moves by more."""
  rng = np.random.default_rng(3)
  n = 200
  states = np.zeros((n, 3))
  states[:, 0] = 0.05 * rng.normal(size=n)
  states[60:70, 0] += 0.3  # on there, cleanly, by 0.3 of ...
  states[150, 0] = -1.0  # ... a range set by one outlier
  states[:, 1] = rng.uniform(-1, 1, size=n)
  states[60:70, 1] += 0.6  # on there by more of its range, in a wide spread
  states[:, 2] = rng.normal(size=n)
  q = explore.quantise(states)[0]
  a = explore.normalised(q)
  scores = explore.range_scores(q, 60, 69)
  sel = np.zeros(n, bool)
  sel[60:70] = True
  for i in range(3):
    assert scores["score"][i] == pytest.approx(np.corrcoef(a[:, i], sel)[0, 1], rel=1e-12)
  assert explore.rank(scores) == [0, 1, 2]
  # the mean difference over the cell's largest |value| (the score before) ranks them the other way
  diff = scores["inside"] - scores["around"]
  assert abs(diff[1]) > abs(diff[0])


def test_selection_of_several_ranges():
  q = _planted()
  a = explore.normalised(q)
  two = explore.selection_scores(q, [(10, 14), (40, 49)], pad=3)
  inside = np.r_[10:15, 40:50]
  around = np.r_[7:10, 15:18, 37:40, 50:53]  # 3 on either side of each range
  both = np.r_[inside, around]
  r = np.corrcoef(a[both, 2], np.isin(both, inside))[0, 1]
  assert two["score"][2] == pytest.approx(r, rel=1e-12)
  assert two["around"][2] == pytest.approx(a[around, 2].mean())
  # pads that fall inside another selected range do not count as elsewhere
  near = explore.selection_scores(q, [(40, 44), (46, 49)], pad=2)
  assert near["around"][2] == pytest.approx(a[np.r_[38:40, 45, 50:52], 2].mean())
  with pytest.raises(ValueError, match=r"no range selected"):
    explore.selection_scores(q, [])
  with pytest.raises(ValueError, match=r"the range \[5, 120\] must satisfy .* < N = 120"):
    explore.selection_scores(q, [(1, 2), (5, 120)])
  assert not np.any(explore.selection_scores(q, [(0, 119)])["score"])  # nothing elsewhere
  # a cell flat over the selection and its pads scores 0 exactly, whatever its level
  flat = q.copy()
  flat[:, 0] = 20
  flat[30:70, 0] = 176  # a = 48 / 127, not a binary fraction
  assert explore.selection_scores(flat, [(40, 49)], pad=5)["score"][0] == 0.0
  assert explore.selection_scores(flat, [(40, 49)])["score"][0] > 0


def test_selecting_every_occurrence_of_a_feature_ranks_as_the_feature():
  text = 'x = f("a(b", [1])  # c\n    y = "zz"\n' * 4
  f = interpret.text_features(text)
  rng = np.random.default_rng(4)
  states = rng.normal(size=(len(text), 6))
  states[:, 1] += 2 * f["in_quotes"]
  q = explore.quantise(states)[0]
  strings = explore.runs(f["in_quotes"] > 0)
  assert len(strings) == 8 and strings[0] == (6, 10)  # "a(b"
  sel = explore.selection_scores(q, strings)
  feat = explore.feature_scores(q, f["in_quotes"])
  np.testing.assert_allclose(sel["score"], feat["score"], rtol=1e-9)
  assert explore.rank(sel) == explore.rank(feat) and explore.rank(sel)[0] == 1


def test_feature_scores_are_best_cells_pearson_r():
  text = 'x = f("a(b", [1])  # c\n    y = 2\n' * 4
  f = interpret.text_features(text)
  rng = np.random.default_rng(1)
  states = rng.normal(size=(len(text), 5))
  states[:, 3] += 3 * f["in_brackets"]
  q, scale = explore.quantise(states)
  scores = explore.feature_scores(q, f["in_brackets"])
  best = interpret.best_cells(explore.dequantise(q, scale), f, top=5)["in_brackets"]
  for entry in best:
    assert scores["score"][entry["cell"]] == pytest.approx(entry["r"], abs=1e-6)  # f32 feature
  assert explore.rank(scores)[0] == 3
  with pytest.raises(ValueError, match="the feature is constant over the text"):
    explore.feature_scores(q, f["in_quotes"] * 0)


def test_gradient_flow_is_the_product_of_step_jacobians():
  cell = rj.lstm(3)
  params = cell.init(jax.random.key(0), 2)
  params = jax.tree.map(lambda a: a.astype(jnp.float64), params)
  xs = np.asarray(jax.random.normal(jax.random.key(1), (12, 2)), np.float64)
  carries = jax.lax.scan(
    lambda c, x: (cell.step(params, c, x)[0],) * 2,
    jax.tree.map(lambda z: z.astype(jnp.float64), cell.initial_carry(())),
    xs,
  )[1]
  carries = jax.tree.map(lambda a: np.asarray(a, np.float64), carries)
  Js = np.asarray(rj.jacobian.step_jacobians(cell, params, jnp.asarray(xs), method="jacfwd"))
  g = np.random.default_rng(2).normal(size=(2, 6))
  positions, window = [4, 10], 6
  out = explore.gradient_flow(cell, params, xs, carries, g, positions, window, lags=(0, 1, 5, 7))
  for p, t in enumerate(positions):
    # ∂L_t/∂s_k = J_(k+1)ᵀ ⋯ J_tᵀ g, with Js[k] = ∂s_k/∂s_(k-1) (s_(-1): the zero state)
    ref = {t: g[p]}
    for k in range(t, max(-1, t - window) - 1, -1):
      ref[k - 1] = Js[k].T @ ref[k]
    first = max(-1, t - window)
    assert out["first"][p] == first
    want = [np.linalg.norm(ref[k]) for k in range(first, t + 1)]
    np.testing.assert_allclose(out["norms"][p, : len(want)], want, rtol=1e-10)
    assert np.all(np.isnan(out["norms"][p, len(want) :]))
    for j, lag in enumerate((0, 1, 5, 7)):
      if t - lag >= first:
        per_cell = np.sqrt(ref[t - lag][:3] ** 2 + ref[t - lag][3:] ** 2)  # h_i and c_i
        np.testing.assert_allclose(out["cell_grad"][p, j], per_cell, rtol=1e-10)
      else:
        assert np.all(np.isnan(out["cell_grad"][p, j]))
    np.testing.assert_allclose(out["sv"][p], np.linalg.svd(Js[t], compute_uv=False), rtol=1e-10)
    assert out["spectral"][p] == pytest.approx(np.linalg.norm(Js[t], 2), rel=1e-10)
  with pytest.raises(ValueError, match=r"positions \[12\] are outside the text \[0, 12\)"):
    explore.gradient_flow(cell, params, xs, carries, g, [12], window)


def _tiny():
  text = 'def f(x):\n    y = "ab" + g([1, 2])  # c\n    return y\n' * 3
  vocab = data.Vocab.from_text(text)
  model = char_lm(vocab.size, 4, embed=3)
  return text, vocab, model, model.init(jax.random.key(0))


def _embedded(page):
  blob = re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S)
  return json.loads(blob.group(1).replace("<\\/", "</"))


def test_explore_writes_one_self_contained_page(tmp_path):
  text, vocab, model, params = _tiny()
  r = explore.explore(model, params, vocab, text, tmp_path / "e.html", every=40, window=30)
  page = (tmp_path / "e.html").read_text(encoding="utf-8")
  assert r["bytes"] == len(page.encode()) and r["positions"] == [39, 79, 119] and r["cells"] == [4]
  for outside in ("http:", "https:", "<link", "src=", "@import"):
    assert outside not in page
  d = _embedded(page)
  assert d["text"] == text and d["layers"][0]["kinds"] == ["c", "h"]
  carries, inputs = interpret.layer_trace(model, params, vocab, text)
  q = np.frombuffer(base64.b64decode(d["layers"][0]["q"]["c"]), np.uint8).reshape(len(text), 4)
  np.testing.assert_array_equal(q, explore.quantise(np.asarray(carries[0].c))[0])
  norms = np.frombuffer(base64.b64decode(d["grad"]["norms"]), np.float32).reshape(3, 31)
  ids = np.asarray(vocab.encode(text))
  g, losses = explore.readout_gradients(model, params, carries[0], ids, [79])
  # L_t is the model's cross-entropy at t; ∂L_t/∂h_t = W (softmax - onehot), ∂L_t/∂c_t = 0
  _, logits = model.apply(params, jnp.asarray(ids)[:, None])
  ce = readout.cross_entropy(logits[79], jnp.asarray(ids[80:81]))
  assert losses[0] == pytest.approx(float(ce[0]), rel=1e-5)
  assert d["grad"]["loss"][1] == pytest.approx(float(ce[0]), rel=1e-4)
  probs = np.asarray(jax.nn.softmax(logits[79, 0]), np.float64)
  probs[ids[80]] -= 1
  np.testing.assert_allclose(g[0, :4], np.asarray(params.out.w) @ probs, atol=1e-5)
  assert np.all(g[0, 4:] == 0)
  c0 = jax.tree.map(lambda a: jnp.asarray(a[49]), carries[0])  # the state after char 49
  want = rj.jacobian.gradient_norms_vs_lag(  # s_49 .. s_79: 30 steps back from t = 79
    model.cells[0], params.rnn[0], jnp.asarray(inputs[0][50:80]), c0, jnp.asarray(g[0])
  )
  np.testing.assert_allclose(norms[1], np.asarray(want, np.float32), rtol=1e-5)
  assert d["grad"]["first"][1] == 49


def test_page_keeps_a_script_end_in_the_text_inside_the_data():
  text = 'x = "</script><b>"\n' * 3
  states = np.random.default_rng(0).normal(size=(len(text), 2))
  page = explore.page(explore.page_data(text, [{"h": states}]))
  assert page.count("</script>") == 2  # the data's and the code's own
  assert _embedded(page)["text"] == text
  with pytest.raises(ValueError, match=r"layer 0 'h' states must be \[N = 57, H\], got shape"):
    explore.page_data(text, [{"h": states[:5]}])
  with pytest.raises(ValueError, match="layer 0 has no 'h' states"):
    explore.page_data(text, [{"c": states}])


def test_explore_refuses_short_text_and_the_hmlstm(tmp_path):
  text, vocab, model, params = _tiny()
  with pytest.raises(ValueError, match="the text has 1 characters; it needs at least 2"):
    explore.explore(model, params, vocab, "d", tmp_path / "e.html")
  hm = params._replace(hm_out=object())
  with pytest.raises(ValueError, match="the HM-LSTM's levels are not plain stacked cells"):
    explore.explore(model, hm, vocab, text, tmp_path / "e.html")


def test_cli_explore(tmp_path, monkeypatch, capsys):
  text, vocab, model, params = _tiny()
  monkeypatch.setattr(charlm, "restore_model", lambda run: (model, params, vocab, {}))
  corpus = tmp_path / "t.txt"
  corpus.write_text(text * 30)
  out = tmp_path / "page.html"
  args = ["explore", "--run", str(tmp_path), "--text", str(corpus), "--chars", "150"]
  assert cli.main([*args, "--every", "100", "--window", "20", "--out", str(out)]) == 0
  printed = capsys.readouterr().out
  size = out.stat().st_size / 1e6
  assert printed == (
    f"wrote {out} ({size:.2f} MB): 150 characters, 4 cells, gradient flow at 1 positions\n"
  )
  assert len(_embedded(out.read_text(encoding="utf-8"))["text"]) == 150

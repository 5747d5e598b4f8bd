"""Features of source text, cell search, rendering and embedding tools."""

import json

import jax
import numpy as np
import pytest

from rnnjax.apps import data, interpret, plot
from rnnjax.apps.models import char_lm


def test_text_features_by_hand():
  t = 'x = f("a(b", [1])  # c\n    y = 2\n'
  f = interpret.text_features(t)
  q = "".join(str(int(v)) for v in f["in_quotes"])
  assert q == "0" * 6 + "1" * 5 + "0" * (len(t) - 11)  # '"a(b"', quotes included
  #                      x     =     f  (  "  a  (  b  "  ,     [  1  ]  )
  assert list(f["in_brackets"][:17]) == [0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 1]
  c = t.index("#")
  assert "".join(str(int(v)) for v in f["in_comment"]) == "0" * c + "111" + "0" * (len(t) - c - 3)
  assert f["indent"][t.index("y")] == 4 and f["indent"][0] == 0
  assert f["column"][t.index("y")] == 4


def test_best_cells_finds_a_planted_cell():
  t = 'a = "xx" + b("q")  # hi\n' * 20
  f = interpret.text_features(t)
  rng = np.random.default_rng(0)
  states = rng.normal(size=(len(t), 16))
  states[:, 5] = 2 * f["in_quotes"] - 1 + 0.1 * rng.normal(size=len(t))
  states[:, 9] = -f["in_comment"]
  best = interpret.best_cells(states, f)
  assert best["in_quotes"][0]["cell"] == 5 and best["in_quotes"][0]["r"] > 0.95
  assert best["in_comment"][0]["cell"] == 9 and best["in_comment"][0]["r"] < -0.99


def test_char_states_html_and_png(tmp_path):
  vocab = data.Vocab.from_text("def f(x):\n  return 'x'\n")
  model = char_lm(vocab.size, 8, embed=4)
  params = model.init(jax.random.key(0))
  text = "def f(x):\n  return 'x'\n"
  states = interpret.char_states(model, params, vocab, text)
  assert states.shape == (len(text), 8)
  page = interpret.html_page(text, states, {"quotes": 3})
  assert page.count("<span style=") == len(text) and "<h2>quotes: cell 3</h2>" in page
  png = interpret.cell_png(text, states[:, 3], tmp_path / "c.png", "cell 3")
  assert png.read_bytes()[:4] == b"\x89PNG"


def test_html_page_colours_by_the_largest_activation_with_a_legend():
  text = "ab\ncd"
  states = np.zeros((5, 2))
  states[:, 1] = [-2.0, 0.0, 0.5, 1.0, 2.0]
  page = interpret.html_page(
    text, states, {"in_quotes (r = +0.50)": 1}, quantity="LSTM cell state c"
  )
  backgrounds = [
    "rgb(0,0,255)",  # -2: the largest |activation|, blue
    "rgb(255,255,255)",  # 0: white
    "rgb(255,191,191)",  # +0.5 = +2/4
    "rgb(255,127,127)",  # +1
    "rgb(255,0,0)",  # +2: red
  ]
  spans = [
    f"<span style='background:{c}'>{ch}</span>" for c, ch in zip(backgrounds, text, strict=True)
  ]
  assert "".join(spans) in page
  assert "LSTM cell state c -2 <span class='legend'></span> +2" in page
  assert "activation" not in page
  assert "bracket depth = the number of (, [ and { open at the character" in page
  assert "This page shows 1 of the 2 cells" in page
  assert "blue negative, white 0, red positive" in page
  assert (
    "r is the Pearson correlation between the cell&#x27;s state and the feature, "
    "over the 5 characters of text on this page."
  ) in page
  assert "Pearson" not in interpret.html_page(text, states, {"chosen": 1}, explain_r=False)


def test_cell_figure_has_a_colour_bar_and_says_what_r_is():
  text = "ab\ncd\nef"
  acts = np.array([-2.0, 0.0, 9.0, 1.0, 2.0, 0.0, 0.0, 0.0])
  note = interpret.r_note(len(text), "analysed")
  fig = interpret.cell_figure(
    text,
    acts,
    "cell 0: best for column (r = +0.50)",
    max_lines=2,
    note=note,
    quantity="LSTM cell state c",
  )
  grid, bar = fig.axes
  colours = [p.get_facecolor()[:3] for p in grid.patches]
  # a, b on line 0; c, d on line 1 (positions 3, 4); the scale is max |activation| = 9,
  # from the newline at position 2, which is not drawn, nor is line 3
  expected = [
    (1 - 2 / 9, 1 - 2 / 9, 1),  # -2: light blue
    (1, 1, 1),  # 0: white
    (1, 1 - 1 / 9, 1 - 1 / 9),  # +1: light red
    (1, 1 - 2 / 9, 1 - 2 / 9),  # +2
  ]
  np.testing.assert_allclose(colours, expected, atol=0.01)
  np.testing.assert_allclose(bar.get_xlim(), [-9, 9])
  label = " ".join(bar.get_xlabel().split())
  assert label.startswith("LSTM cell state c: blue negative, white 0, red positive")
  assert "r is the Pearson correlation between the cell's state and the feature" in label
  assert "over the 8 characters of text analysed" in label
  assert "The picture shows lines 1-2 of 3." in label
  plot.pyplot().close(fig)


def test_cell_figure_draws_the_feature_as_a_strip_from_the_chosen_line():
  text = "ab\ncd\nef"
  acts = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, 1.0])
  feature = np.array([0, 0, 0, 0, 0, 0, 2, 1], float)
  fig = interpret.cell_figure(
    text, acts, max_lines=1, feature=feature, feature_name="in_brackets", first_line=2
  )
  grid, bar = fig.axes
  colours = [p.get_facecolor()[:3] for p in grid.patches]
  # line 3 only ("ef"): e's cell, e's strip (depth 2 = the darkest), f's cell, f's strip
  np.testing.assert_allclose(
    colours, [(0, 0, 1), (0.2, 0.32, 0.2), (1, 0, 0), (0.6, 0.72, 0.6)], atol=0.01
  )
  assert [t.get_text() for t in grid.texts] == ["e", "f"]
  label = " ".join(bar.get_xlabel().split())
  assert "Strip under each line: bracket depth = the number of (, [ and { open" in label
  assert "White 0, darkest green 2." in label and "lines 3-3 of 3" in label
  plot.pyplot().close(fig)


def test_varied_window_finds_the_lines_where_a_feature_varies():
  text = (
    "".join(f"x{i}\n" for i in range(40)) + 'y = "s"\n' * 5 + "".join(f"z{i}\n" for i in range(40))
  )
  quotes = interpret.text_features(text)["in_quotes"]
  first = interpret.varied_window(text, quotes, lines=10)
  # the 10-line window holds all 5 quoted lines (40-44), not the first 10 lines
  assert 35 <= first <= 40
  assert first == 40  # with the 3-character z lines after them, the quoted share is largest
  assert interpret.varied_window("a\nb", np.zeros(3), lines=10) == 0


def test_write_static_shows_each_features_best_cell_where_it_varies(tmp_path):
  text = "".join(f"x{i} = {i}\n" for i in range(60)) + 's = "q" + "r"\n' * 4
  f = interpret.text_features(text)
  rng = np.random.default_rng(0)
  states = 0.1 * rng.normal(size=(len(text), 6))
  states[:, 4] = f["in_quotes"]
  best = interpret.write_static(text, states, tmp_path, "LSTM cell state c", png_names="feature")
  assert best["in_quotes"][0]["cell"] == 4
  assert (tmp_path / "cell_in_quotes.png").read_bytes()[:4] == b"\x89PNG"
  page = (tmp_path / "visualize.html").read_text(encoding="utf-8")
  assert "<h2>in_quotes (r = +" in page and "LSTM cell state c" in page
  assert json.loads((tmp_path / "features.json").read_text())["in_quotes"][0]["cell"] == 4


def test_embedding_tools(tmp_path):
  vocab = data.Vocab("\ufffdabc123")
  table = np.array(
    [[0, 0, 1], [1, 0, 0], [0.9, 0.1, 0], [0.8, 0.2, 0], [0, 1, 0], [0.1, 0.9, 0], [0, 0.95, 0.05]],
    float,
  )
  nn = interpret.nearest(table, vocab, "a", 2)
  assert [c for c, _ in nn] == ["b", "c"]
  assert interpret.cluster_score(table, vocab, "123") > 0.5
  # a − b + c with a, b, c letters/digits: "1" − "a" + "b" is nearest to a digit
  got = interpret.analogy(table, vocab, "1", "a", "b", 3)
  assert [c for c, _ in got] == ["3", "2", "c"]  # the inputs 1, a, b are excluded
  xy = interpret.pca_2d(table)
  assert xy.shape == (7, 2)
  assert interpret.embedding_png(table, vocab, tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
  with pytest.raises(ValueError, match=r"'z' is not in the vocabulary"):
    interpret.nearest(table, vocab, "z")

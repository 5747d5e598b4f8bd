"""Features of source text, cell search, rendering and embedding tools."""

import jax
import numpy as np
import pytest

from rnnjax.apps import data, interpret
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
  assert page.count("<span") == len(text) and "cell 3" in page
  png = interpret.cell_png(text, states[:, 3], tmp_path / "c.png", "cell 3")
  assert png.read_bytes()[:4] == b"\x89PNG"


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
  assert interpret.analogy(table, vocab, "1", "a", "b", 1)[0][0] in "23"
  xy = interpret.pca_2d(table)
  assert xy.shape == (7, 2)
  assert interpret.embedding_png(table, vocab, tmp_path / "e.png").exists()
  with pytest.raises(ValueError, match=r"'z' is not in the vocabulary"):
    interpret.nearest(table, vocab, "z")

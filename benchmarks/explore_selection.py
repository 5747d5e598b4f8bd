"""Hypothesis selection on a trained char model: does selecting a range of text
find the cell that tracks a feature?

For each of three features (inside quotes, bracket depth, indentation) the
"feature's cell" is the cell of the layer whose LSTM cell state c correlates
best with the feature over the text (`rnnjax.apps.interpret.best_cells`). The
selections are not picked by hand: every maximal run of the text where the
feature is on (a string literal of at least 5 characters; a span inside
brackets of at least 5 characters; a block of lines indented deeper than the
line before it) is selected in turn, the cells ranked with the page's formula
(`rnnjax.apps.explore.range_scores`, pad 10, by |score|), and the rank of the
feature's cell recorded. With ``--browser``, the first selection of each
feature is also made in the stored page, in headless Chromium, and the page's
top 5 compared with Python's.

    python benchmarks/explore_selection.py --run RUN --page PAGE.html --out results.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rnnjax.apps import charlm, data, explore, interpret, io


def runs(on: np.ndarray, min_len: int) -> list[tuple[int, int]]:
  """The maximal runs ``[start, stop]`` (inclusive) where ``on`` is true, at least ``min_len``."""
  out, start = [], None
  for t, v in enumerate([*list(on), False]):
    if v and start is None:
      start = t
    elif not v and start is not None:
      if t - start >= min_len:
        out.append((start, t - 1))
      start = None
  return out


def indented_blocks(text: str) -> list[tuple[int, int]]:
  """Blocks of consecutive lines indented deeper than the line before them: ``[start, stop]``
  from the block's first character to its last line's end (its newline excluded)."""
  lines = text.split("\n")
  starts = np.cumsum([0] + [len(line) + 1 for line in lines[:-1]])
  indent = [len(line) - len(line.lstrip(" ")) if line.strip() else None for line in lines]
  out, i = [], 1
  while i < len(lines):
    prev = next((indent[j] for j in range(i - 1, -1, -1) if indent[j] is not None), 0)
    if indent[i] is not None and indent[i] > prev:
      j = i
      while j + 1 < len(lines) and (indent[j + 1] is None or indent[j + 1] >= indent[i]):
        j += 1
      while indent[j] is None:
        j -= 1
      out.append((int(starts[i]), int(starts[j] + len(lines[j]) - 1)))
      i = j + 1
    else:
      i += 1
  return out


def selections(text: str) -> dict[str, list[tuple[int, int]]]:
  f = interpret.text_features(text)
  return dict(
    in_quotes=runs(f["in_quotes"] > 0, 5),
    in_brackets=runs(f["in_brackets"] > 0, 5),
    indent=indented_blocks(text),
  )


def browser_top5(page: Path, picks: dict[str, tuple[int, int]]) -> dict[str, list[int]]:
  """The page's own ranking (its JavaScript, in headless Chromium) for each selection."""
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By

  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which("chromium") or "chromium"
  profile = tempfile.mkdtemp()
  for arg in ("--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}"):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
  try:
    driver.get(page.resolve().as_uri())
    out = {}
    for name, (a, b) in picks.items():
      driver.execute_script(
        "document.getElementById('from').value = arguments[0];"
        "document.getElementById('to').value = arguments[1];"
        "document.getElementById('rank').click();",
        a,
        b,
      )
      rows = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
      out[name] = [int(r.get_attribute("data-cell")) for r in rows[:5]]
    return out
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def rank_all(q: np.ndarray, text: str, pad: int | None, cells: dict[str, int]) -> dict[str, dict]:
  """Every selection of each feature ranked; the rank of the feature's cell in each."""
  out = {}
  for name, sel in selections(text).items():
    cell = cells[name]
    ranks, tops = [], []
    for a, b in sel:
      order = explore.rank(explore.range_scores(q, a, b, pad))
      ranks.append(order.index(cell) + 1)
      tops.append(order[:5])
    a, b = sel[0]
    out[name] = dict(
      cell=cell,
      first_selection=dict(start=a, stop=b, text=text[a : b + 1][:80]),
      first_rank=ranks[0],
      first_top5=tops[0],
      selections=len(sel),
      in_top5=int(sum(r <= 5 for r in ranks)),
      median_rank=float(np.median(ranks)),
      ranks=ranks,
      spans=[list(s) for s in sel],
    )
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", type=Path, required=True, help="a train or demo run folder")
  parser.add_argument("--chars", type=int, default=3000, help="characters of held-out code")
  parser.add_argument("--pad", type=int, default=None, help="the page's pad (default: none)")
  parser.add_argument("--page", type=Path, default=None, help="the explore page, for --browser")
  parser.add_argument("--browser", action="store_true", help="also rank in the page, in Chromium")
  parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
  args = parser.parse_args()

  model, params, vocab, _ = charlm.restore_model(args.run)
  text = data.python_source_corpus().val[: args.chars]
  carries, _ = interpret.layer_trace(model, params, vocab, text)
  features = interpret.text_features(text)
  result: dict[str, dict] = {}
  for kind in ("c", "h"):
    q, scale = explore.quantise(np.asarray(getattr(carries[0], kind)))
    best = interpret.best_cells(explore.dequantise(q, scale), features)
    cells = {k: best[k][0]["cell"] for k in ("in_quotes", "in_brackets", "indent")}
    found = rank_all(q, text, args.pad, cells)
    for name, v in found.items():
      v["r"] = round(best[name][0]["r"], 3)
      print(
        f"{kind}: {name:12s} cell {v['cell']:4d} (r = {v['r']:+.3f}): first selection "
        f"[{v['first_selection']['start']}, {v['first_selection']['stop']}] rank "
        f"{v['first_rank']}; in the top 5 for {v['in_top5']} of {v['selections']} selections "
        f"(ranks {v['ranks']})"
      )
    result[kind] = found
  if args.browser:
    if args.page is None:
      parser.error("--browser needs --page")
    picks = {
      k: (v["first_selection"]["start"], v["first_selection"]["stop"])
      for k, v in result["c"].items()
    }
    for name, top in browser_top5(args.page, picks).items():
      result["c"][name]["page_top5"] = top
      print(f"c: {name:12s} the page's top 5 {top}, Python's {result['c'][name]['first_top5']}")
  result["setup"] = dict(
    chars=len(text),
    pad=args.pad,
    layer=0,
    sign="both (|score|)",
    cells="per feature, the cell whose state (c or h) correlates best with it over the text",
  )
  io.write_json(args.out, result)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

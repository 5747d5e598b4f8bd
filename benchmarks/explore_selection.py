"""Hypothesis selection on a trained char model: does selecting a range of text
find the cell that tracks a feature?

For each of three features (inside quotes, bracket depth, indentation) and each
state (the LSTM's cell state c and hidden state h), "the feature's cell" is
fixed before any selection is made, from the feature alone: the cell whose
state has the largest |Pearson r| with the feature over the whole text
(`rnnjax.apps.interpret.best_cells`, the cell the demo report and the page's
cell list name). As a check on that choice the JSON also records the runner-up
cells by r and the cell with the largest |Spearman rank correlation| (for a 0/1
feature, the cell whose AUC is furthest from 1/2).

The selections are not picked by hand: every selection a user would make for
the feature is made in turn (every string literal of at least 5 characters;
every bracketed span of at least 5 characters; every indented line, its
newline excluded, and every block of lines indented deeper than the line
before), the cells ranked with the page's formula
(`rnnjax.apps.explore.selection_scores`, elsewhere: the rest of the text, by
|score|), and the rank of the feature's cell recorded, beside its rank under
the score the page used before (the mean difference of the state over the
cell's largest |value|). With ``--browser``, the first selection of each
feature is also made in the stored page, in headless Chromium, for c and h, and
the page's top 5 compared with Python's.

    python benchmarks/explore_selection.py --run RUN --page PAGE.html --browser --out results.json
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from rnnjax.apps import charlm, data, explore, interpret, io

FEATURES = ("in_quotes", "in_brackets", "indent")


def indented_lines(text: str) -> list[tuple[int, int]]:
  """Every line that begins with a space and has more than spaces: ``[start, stop]``,
  its newline excluded."""
  out, pos = [], 0
  for line in text.split("\n"):
    if line.startswith(" ") and line.strip():
      out.append((pos, pos + len(line) - 1))
    pos += len(line) + 1
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


def selections(text: str) -> dict[str, dict[str, list[tuple[int, int]]]]:
  """Per feature, the kinds of selection a user would make for it, each made everywhere."""
  f = interpret.text_features(text)
  long = lambda spans: [(a, b) for a, b in spans if b - a + 1 >= 5]  # noqa: E731
  return dict(
    in_quotes={"string": long(explore.runs(f["in_quotes"] > 0))},
    in_brackets={"bracketed span": long(explore.runs(f["in_brackets"] > 0))},
    indent={"indented line": indented_lines(text), "indented block": indented_blocks(text)},
  )


def previous_score(q: np.ndarray, a: int, b: int) -> np.ndarray:
  """The score the page used before: mean of ``(q - 128) / 127`` inside minus elsewhere."""
  x = explore.normalised(q)
  inside = np.zeros(len(q), bool)
  inside[a : b + 1] = True
  return x[inside].mean(0) - x[~inside].mean(0)


def spearman_best(states: np.ndarray, feature: np.ndarray) -> dict:
  """The cell with the largest |Spearman rho| with the feature (ties share their mean rank)."""
  from scipy.stats import rankdata

  r = rankdata(states, axis=0)
  r = r - r.mean(0)
  f = rankdata(feature)
  f = f - f.mean()
  rho = (r * f[:, None]).sum(0) / (np.sqrt((r**2).sum(0) * (f**2).sum()) + 1e-12)
  i = int(np.argmax(np.abs(rho)))
  return dict(cell=i, rho=round(float(rho[i]), 3))


def position(order: list[int], cell: int) -> int:
  return order.index(cell) + 1


def rank_all(
  q: np.ndarray, text: str, cells: dict[str, int], alt: dict[str, int]
) -> dict[str, dict]:
  """Every selection of each feature ranked; the rank of the feature's cell in each (and of
  ``alt``'s cell, the one by rank correlation)."""
  out: dict[str, dict] = {}
  for name, kinds in selections(text).items():
    cell = cells[name]
    out[name] = {}
    for kind, spans in kinds.items():
      ranks, before, tops, alt_ranks = [], [], [], []
      for a, b in spans:
        order = explore.rank(explore.selection_scores(q, [(a, b)]))
        ranks.append(position(order, cell))
        alt_ranks.append(position(order, alt[name]))
        tops.append(order[:5])
        before.append(position(explore.rank(dict(score=previous_score(q, a, b))), cell))
      best = int(np.argmin(ranks))
      out[name][kind] = dict(
        selections=len(spans),
        first=dict(span=list(spans[0]), text=text[spans[0][0] : spans[0][1] + 1][:80]),
        first_rank=ranks[0],
        first_rank_before=before[0],
        first_top5=tops[0],
        best=dict(span=list(spans[best]), text=text[spans[best][0] : spans[best][1] + 1][:80]),
        best_rank=ranks[best],
        in_top5=int(sum(r <= 5 for r in ranks)),
        in_top5_before=int(sum(r <= 5 for r in before)),
        median_rank=float(np.median(ranks)),
        median_rank_before=float(np.median(before)),
        ranks=ranks,
        ranks_before=before,
        spearman_cell_ranks=alt_ranks,
        spearman_cell_in_top5=int(sum(r <= 5 for r in alt_ranks)),
        spans=[list(s) for s in spans],
      )
  return out


def browser_top5(page: Path, picks: dict[str, dict[str, tuple[int, int]]]) -> dict:
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
    out: dict[str, dict[str, list[int]]] = {}
    for kind, named in picks.items():
      driver.find_element(By.ID, f"kind-{kind}").click()
      out[kind] = {}
      for name, (a, b) in named.items():
        driver.execute_script(
          "document.getElementById('ranges').value = arguments[0];"
          "document.getElementById('rank').click();",
          f"{a}-{b}",
        )
        rows = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
        out[kind][name] = [int(r.get_attribute("data-cell")) for r in rows[:5]]
    return out
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--run", type=Path, required=True, help="a train or demo run folder")
  parser.add_argument("--chars", type=int, default=3000, help="characters of held-out code")
  parser.add_argument("--offset", type=int, default=0, help="where in the held-out code to start")
  parser.add_argument("--page", type=Path, default=None, help="the explore page, for --browser")
  parser.add_argument("--browser", action="store_true", help="also rank in the page, in Chromium")
  parser.add_argument("--out", type=Path, required=True, help="the JSON to write")
  args = parser.parse_args()

  model, params, vocab, _ = charlm.restore_model(args.run)
  text = data.python_source_corpus().val[args.offset : args.offset + args.chars]
  carries, _ = interpret.layer_trace(model, params, vocab, text)
  features = interpret.text_features(text)
  result: dict[str, dict] = {}
  for kind in ("c", "h"):
    q, scale = explore.quantise(np.asarray(getattr(carries[0], kind)))
    states = explore.dequantise(q, scale)
    best = interpret.best_cells(states, features, top=3)
    cells = {k: best[k][0]["cell"] for k in FEATURES}
    alt = {k: spearman_best(states, features[k]) for k in FEATURES}
    found = rank_all(q, text, cells, {k: v["cell"] for k, v in alt.items()})
    for name in FEATURES:
      found[name] = dict(
        cell=cells[name],
        r=round(best[name][0]["r"], 3),
        runners_up=[dict(cell=b["cell"], r=round(b["r"], 3)) for b in best[name][1:]],
        spearman_cell=alt[name],
        by_selection=found[name],
      )
      for sel, v in found[name]["by_selection"].items():
        print(
          f"{kind}: {name:11s} cell {cells[name]:3d} (r = {found[name]['r']:+.3f}), {sel}s: "
          f"first {v['first']['span']} rank {v['first_rank']} (before {v['first_rank_before']}); "
          f"best {v['best']['span']} rank {v['best_rank']}; top 5 in {v['in_top5']} of "
          f"{v['selections']} (before {v['in_top5_before']}); by rank correlation cell "
          f"{alt[name]['cell']}: first {v['spearman_cell_ranks'][0]}, top 5 in "
          f"{v['spearman_cell_in_top5']}"
        )
    result[kind] = found
  if args.browser:
    if args.page is None:
      parser.error("--browser needs --page")
    picks = {
      kind: {
        name: tuple(next(iter(result[kind][name]["by_selection"].values()))["first"]["span"])
        for name in FEATURES
      }
      for kind in ("c", "h")
    }
    for kind, named in browser_top5(args.page, picks).items():
      for name, top in named.items():
        first = next(iter(result[kind][name]["by_selection"].values()))
        first["page_top5"] = top
        print(f"{kind}: {name:11s} the page's top 5 {top}, Python's {first['first_top5']}")
  result["setup"] = dict(
    chars=len(text),
    offset=args.offset,
    layer=0,
    elsewhere="the rest of the text",
    score="selection_scores: the correlation of the cell's state with the selection, by |score|",
    score_before="mean of state / (cell's largest |state|) inside minus elsewhere, by |score|",
    cells="per feature and state, the cell with the largest |Pearson r| with it over the text",
  )
  io.write_json(args.out, result)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()

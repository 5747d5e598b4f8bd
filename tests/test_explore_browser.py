"""The explorer page in a real browser: headless Chromium, driven by selenium.

The page is built by `rnnjax.apps.explore` from synthetic states whose cells
are known by construction (no training), loaded from disk (file://), and its
JavaScript is checked against the Python reference: colours, hover values,
the hypothesis ranking and matches, and the gradient panel's norms.

Without Chromium and chromedriver (Debian: ``apt-get install chromium
chromium-driver``) and selenium these tests skip, except under ``CI=true``,
where they fail.
"""

import os
import re
import shutil

import numpy as np
import pytest

from rnnjax.apps import explore, interpret

CHROMIUM = next(
  (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
DRIVER = shutil.which("chromedriver")
try:
  import selenium  # noqa: F401

  HAVE_SELENIUM = True
except ImportError:
  HAVE_SELENIUM = False

_MISSING = [
  name
  for name, ok in (
    ("chromium", CHROMIUM),
    ("chromedriver", DRIVER),
    ("selenium (pip install selenium)", HAVE_SELENIUM),
  )
  if not ok
]
if _MISSING:
  reason = (
    f"browser tests need {', '.join(_MISSING)}: apt-get install chromium chromium-driver; "
    "pip install -e '.[test]'"
  )
  if os.environ.get("CI", "").lower() == "true":
    raise RuntimeError(f"CI=true: {reason}")
  pytest.skip(reason, allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

TEXT = (
  "def area(w, h):\n"
  '    """Return w times h."""\n'
  "    return (w * h)  # the area\n"
  "\n"
  "x = area(3, [4][0])\n"
  "print('done', x)\n"
) * 3
PLANT = (TEXT.index("return"), TEXT.index("return") + 5)  # cell 3 is on exactly here
_P = [i for i in range(len(TEXT)) if TEXT.startswith("print", i)]
TWO = [(_P[0], _P[0] + 4), (_P[1], _P[1] + 4)]  # cell 6 is on exactly over these, cell 7 off
H = 8


def synthetic():
  """States of two kinds for H cells: cell 3 on exactly over PLANT, cell 5 tracks
  the bracket depth, cell 6 on exactly over the two ranges TWO (the first two of the
  three `print`s) and cell 7 off there, the others noise; and a gradient panel for two
  positions."""
  rng = np.random.default_rng(0)
  n = len(TEXT)
  f = interpret.text_features(TEXT)
  c = 0.3 * rng.normal(size=(n, H))
  c[:, 3] = -0.4 + 0.02 * rng.normal(size=n)
  c[PLANT[0] : PLANT[1] + 1, 3] = 1.0
  c[:, 5] = f["in_brackets"] + 0.1 * rng.normal(size=n)
  c[:, 6] = -0.3 + 0.02 * rng.normal(size=n)
  for a, b in TWO:
    c[a : b + 1, 6] = 0.8
  c[:, 7] = -c[:, 6] + 0.05 * rng.normal(size=n)
  h = np.tanh(c)
  positions, window = [49, 99], 20
  norms = np.full((2, window + 1), np.nan)
  for p in range(len(positions)):
    norms[p] = 0.9 ** np.arange(window, -1, -1) * (1 + p)
  sv = np.sort(rng.uniform(0.01, 2.0, size=(2, 2 * H)))[:, ::-1]
  sv[1, -3:] = 0.0  # three zero singular values
  grad = dict(
    positions=positions,
    first=[t - window for t in positions],
    norms=norms,
    lags=[0, 1, 2, 4, 8],
    cell_grad=rng.uniform(1e-3, 1, size=(2, 5, H)),
    spectral=sv[:, 0],
    sv=sv,
    window=window,
    layer=0,
    loss=[1.5, 2.5],
  )
  data = explore.page_data(TEXT, [{"c": c, "h": h}], grad, "synthetic")
  return data, c


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
  folder = tmp_path_factory.mktemp("explore")
  data, c = synthetic()
  path = folder / "page.html"
  path.write_text(explore.page(data), encoding="utf-8")
  options = webdriver.ChromeOptions()
  options.binary_location = CHROMIUM
  for arg in (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    f"--user-data-dir={folder / 'profile'}",
    "--window-size=1100,1400",
  ):
    options.add_argument(arg)
  options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
  driver = webdriver.Chrome(service=Service(DRIVER), options=options)
  driver.get(path.as_uri())
  yield driver, data, c
  driver.quit()


def _q(c):
  return explore.quantise(c)[0]


def _rgb(text):
  return text.replace(" ", "")


def test_page_loads_from_disk_without_console_errors(browser):
  driver, _, _ = browser
  assert driver.execute_script("return document.body.dataset.ready") == "1"
  errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
  assert errors == []
  assert len(driver.find_elements(By.CSS_SELECTOR, "#text .ln span")) == len(TEXT)
  assert len(Select(driver.find_element(By.ID, "cell")).options) == H


def test_choosing_a_cell_recolours_the_text(browser):
  driver, _, c = browser
  Select(driver.find_element(By.ID, "cell")).select_by_value("5")
  shown = driver.execute_script(
    "return Array.from(document.querySelectorAll('#text .ln span')).map(s => s.style.background)"
  )
  q = _q(c)[:, 5]
  expected = [interpret._color(v) for v in explore.normalised(q)]
  assert [_rgb(s) for s in shown] == expected
  label = driver.find_element(By.ID, "bar-label").text
  assert label.startswith("LSTM cell state c of cell 5")


def test_hover_shows_the_value_of_a_planted_character(browser):
  driver, data, c = browser
  Select(driver.find_element(By.ID, "cell")).select_by_value("3")
  t = PLANT[0] + 2
  span = driver.find_elements(By.CSS_SELECTOR, "#text .ln span")[t]
  ActionChains(driver).move_to_element(span).perform()
  info = driver.find_element(By.ID, "hover").text
  assert info.startswith(f"#{t} '{TEXT[t]}' c[3] = ")
  shown = float(re.search(r"c\[3\] = ([-+.e\d]+)", info).group(1))
  expected = explore.dequantise(_q(c), data["layers"][0]["scale"]["c"])[t, 3]
  assert shown == pytest.approx(expected, rel=1e-3) and shown == pytest.approx(1.0, abs=0.01)


def _drag(driver, a, b, add=False):
  """A real mouse selection from character a to b (holding Ctrl to add a range)."""
  spans = driver.find_elements(By.CSS_SELECTOR, "#text .ln span")
  chain = ActionChains(driver)
  if add:
    chain.key_down(Keys.CONTROL)
  chain.move_to_element_with_offset(spans[a], -3, 0).click_and_hold()
  chain.move_to_element_with_offset(spans[b], 3, 0).release()
  if add:
    chain.key_up(Keys.CONTROL)
  chain.perform()


def _order(driver):
  rows = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
  return [int(r.get_attribute("data-cell")) for r in rows]


def test_selecting_a_range_ranks_the_planted_cell_first_as_python_does(browser):
  driver, _, c = browser
  _drag(driver, *PLANT)
  ranges = driver.find_element(By.ID, "ranges").get_attribute("value")
  assert ranges == f"{PLANT[0]}-{PLANT[1]}"  # the mouse selection, read back as characters
  js_order = _order(driver)
  scores = explore.range_scores(_q(c), *PLANT)  # the page's default: the rest of the text
  assert js_order[0] == 3
  assert js_order == explore.rank(scores)[: len(js_order)]
  # the page's scores are Python's to the last bit (exact integer sums of the bytes)
  assert driver.execute_script("return st.scores.score") == scores["score"].tolist()
  shown = driver.find_elements(By.CSS_SELECTOR, "#ranking td:nth-child(4)")
  assert [td.text for td in shown] == [f"{scores['score'][i]:.4f}" for i in js_order]
  # the default: the top 3 ticked; the marked positions are Python's matches
  driver.find_element(By.ID, "match").click()
  count = int(driver.find_element(By.ID, "match-info").get_attribute("data-count"))
  expected = explore.match_positions(_q(c), js_order[:3], scores)
  assert count == int(expected.sum())
  marked = driver.execute_script(
    "return Array.from(document.querySelectorAll('#text .ln span')).map(s => "
    "s.classList.contains('m'))"
  )
  assert marked == expected.tolist()
  # with a pad of 5 characters on either side as "elsewhere"
  pad = driver.find_element(By.ID, "pad")
  pad.send_keys("5")
  driver.find_element(By.ID, "rank").click()
  assert _order(driver) == explore.rank(explore.range_scores(_q(c), *PLANT, pad=5))[:8]
  pad.clear()


def test_ctrl_adds_a_range_and_the_matches_become_the_selection(browser):
  driver, _, c = browser
  _drag(driver, *TWO[0])
  _drag(driver, *TWO[1], add=True)
  ranges = driver.find_element(By.ID, "ranges").get_attribute("value")
  assert ranges == ", ".join(f"{a}-{b}" for a, b in TWO)
  scores = explore.selection_scores(_q(c), TWO)
  js_order = _order(driver)
  assert js_order[:2] == [6, 7] and js_order == explore.rank(scores)[:8]
  assert driver.execute_script("return st.scores.score") == scores["score"].tolist()
  Select(driver.find_element(By.ID, "sign")).select_by_value("off")  # off there only
  assert _order(driver)[0] == 7 and _order(driver) == explore.rank(scores, "off")[:8]
  Select(driver.find_element(By.ID, "sign")).select_by_value("both")
  driver.find_element(By.ID, "rank").click()
  # LSTMVis's next step: the positions where the ticked cells match become the selection
  for box in driver.find_elements(By.CSS_SELECTOR, "#ranking .mk")[1:]:
    if box.is_selected():
      box.click()  # only cell 6 ticked
  driver.find_element(By.ID, "select-matches").click()
  match = explore.match_positions(_q(c), [6], scores)
  runs = explore.runs(match)
  assert runs == TWO  # cell 6 is on exactly there
  assert driver.find_element(By.ID, "ranges").get_attribute("value") == ranges
  assert _order(driver) == explore.rank(explore.selection_scores(_q(c), runs))[:8]
  driver.find_element(By.ID, "ranges").clear()


def test_ranking_by_a_feature_is_pythons(browser):
  driver, _, c = browser
  Select(driver.find_element(By.ID, "feature")).select_by_value("in_brackets")
  driver.find_element(By.ID, "rank-feature").click()
  rows = driver.find_elements(By.CSS_SELECTOR, "#ranking tbody tr")
  js_order = [int(r.get_attribute("data-cell")) for r in rows]
  scores = explore.feature_scores(_q(c), interpret.text_features(TEXT)["in_brackets"])
  assert js_order[0] == 5 and js_order == explore.rank(scores)[: len(js_order)]


def test_gradient_panel_draws_the_exported_norms(browser):
  driver, _, _ = browser
  Select(driver.find_element(By.ID, "gpos")).select_by_value("1")
  pts = driver.execute_script(
    "return Array.from(document.querySelectorAll('#g-lag circle.gn')).map(e => "
    "[+e.dataset.k, +e.dataset.v])"
  )
  t, window = 99, 20
  expected = (0.9 ** np.arange(window, -1, -1) * 2).astype(np.float32)
  assert [k for k, _ in pts] == list(range(t - window, t + 1))
  np.testing.assert_array_equal(np.array([v for _, v in pts], np.float32), expected)
  assert "3 exactly zero" in driver.find_element(By.ID, "sv-info").text
  assert len(driver.find_elements(By.CSS_SELECTOR, "#g-sv text.sv0")) == 3
  assert len(driver.find_elements(By.CSS_SELECTOR, "#g-spec circle.sp")) == 2

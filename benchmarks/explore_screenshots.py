"""Screenshots of the explorer page's three panels, taken in headless Chromium.

    python benchmarks/explore_screenshots.py PAGE.html --selection selection.json \\
        --out docs/screenshots

Shows the bracket-depth cell of ``selection.json`` (`explore_selection.py`) in
the text view (its c), ranks the cells' h for the first bracketed span and marks
where the top three match, and draws the gradient panel at a position inside
that span.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("page", type=Path)
  parser.add_argument("--selection", type=Path, required=True)
  parser.add_argument("--out", type=Path, required=True)
  args = parser.parse_args()

  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By
  from selenium.webdriver.support.ui import Select

  found = json.loads(args.selection.read_text())["c"]["in_brackets"]
  a, b = found["by_selection"]["bracketed span"]["first"]["span"]
  options = webdriver.ChromeOptions()
  options.binary_location = shutil.which("chromium") or "chromium"
  profile = tempfile.mkdtemp()
  for arg in (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--hide-scrollbars",
    "--window-size=1060,2600",
    f"--user-data-dir={profile}",
  ):
    options.add_argument(arg)
  driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
  args.out.mkdir(parents=True, exist_ok=True)
  try:
    driver.get(args.page.resolve().as_uri())
    Select(driver.find_element(By.ID, "cell")).select_by_value(str(found["cell"]))
    Select(driver.find_element(By.ID, "strip")).select_by_value("in_brackets")
    # scroll the text view to the selection and hover a character in it
    driver.execute_script(
      "const s = document.querySelectorAll('#text .ln span')[arguments[0]];"
      "document.getElementById('text').scrollTop = s.offsetTop - "
      "document.getElementById('text').offsetTop - 60;",
      a,
    )
    span = driver.find_elements(By.CSS_SELECTOR, "#text .ln span")[a + 3]
    driver.execute_script(
      "arguments[0].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}))", span
    )
    driver.find_element(By.ID, "p-text").screenshot(str(args.out / "explore_text.png"))
    driver.find_element(By.ID, "kind-h").click()  # LSTMVis ranks h
    driver.execute_script(
      "document.getElementById('ranges').value = arguments[0];"
      "document.getElementById('rank').click();"
      "document.getElementById('match').click();",
      f"{a}-{b}",
    )
    driver.find_element(By.ID, "p-hyp").screenshot(str(args.out / "explore_selection.png"))
    driver.find_element(By.ID, "p-text").screenshot(str(args.out / "explore_matches.png"))
    positions = driver.execute_script("return D.grad.positions")
    p = min(range(len(positions)), key=lambda j: abs(positions[j] - (a + b) // 2))
    Select(driver.find_element(By.ID, "gpos")).select_by_value(str(p))
    driver.find_element(By.ID, "p-grad").screenshot(str(args.out / "explore_gradient.png"))
  finally:
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)
  print(f"wrote 4 screenshots to {args.out}")


if __name__ == "__main__":
  main()

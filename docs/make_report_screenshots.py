"""Screenshots of each section of a subtype report, for docs/report.md (headless Chromium).

python docs/make_report_screenshots.py work/demo/run/subtype
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By

FIGURES = Path(__file__).resolve().parent / "figures"
# (file name, CSS selector of the first element, of the last element) on report.html
SECTIONS = [
    ("report-quality", "h2:nth-of-type(1)", "#quality"),
    ("report-cohort-k", "h2:nth-of-type(2)", "h2:nth-of-type(3) ~ table"),
    ("report-subtypes", "h2:nth-of-type(4)", "h2:nth-of-type(5) + img"),
    ("report-probes", "h2:nth-of-type(6)", "h2:nth-of-type(6) + table"),
    ("report-maps", "#subtype-S3", "#subtype-S3 ~ div.pair"),
    ("report-clusters", "#subtype-S3 ~ h3", "#subtype-S3 ~ p.meta"),
    ("report-patients", "#patients", "#patients ~ table"),
    ("report-training", "h2:nth-of-type(12)", "h2:nth-of-type(12) + img"),
]


def shoot(driver, first: str, last: str, path: Path) -> None:
    """One PNG from the top of ``first`` to the bottom of ``last`` (page screenshot, cropped)."""
    from io import BytesIO

    from PIL import Image

    top = driver.find_element(By.CSS_SELECTOR, first).rect["y"]
    end = driver.find_element(By.CSS_SELECTOR, last).rect
    height = end["y"] + end["height"] - top + 10
    driver.set_window_size(1250, int(top + height + 200))
    image = Image.open(BytesIO(driver.get_screenshot_as_png()))
    image.crop((0, int(top) - 5, image.width, int(top + height))).save(path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("subtype_dir", type=Path)
    args = parser.parse_args()
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options)
    try:
        driver.set_window_size(1250, 4000)
        driver.get((args.subtype_dir / "report.html").resolve().as_uri())
        for name, first, last in SECTIONS:
            shoot(driver, first, last, FIGURES / f"{name}.png")
        page = sorted((args.subtype_dir / "patients").glob("*.html"))[0]
        driver.get(page.resolve().as_uri())
        shoot(driver, "h1", "table.t:last-of-type", FIGURES / "report-patient-page.png")
    finally:
        driver.quit()


if __name__ == "__main__":
    main()

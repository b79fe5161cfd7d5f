"""Debian's chromium for Playwright (Playwright's own browser download does not work on these machines),
and where the screenshots the tests take go."""

import os
import shutil
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"


def screenshot(page, name, docs=False):
    """Saves artifacts/screenshots/<name>.png (CI artifact) and, for the README's screenshots, also
    docs/screenshots/<name>.png when MESHSCOPE_DOC_SCREENSHOTS=1: a plain test run changes no
    tracked file."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if docs and os.environ.get("MESHSCOPE_DOC_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / f"{name}.png")
    return path

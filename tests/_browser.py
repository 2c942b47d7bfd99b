"""Headless Chromium for the browser tests, driven by Python playwright with Debian's chromium.

Without a Chromium (or with `USPL_CHROMIUM` naming a file that does not exist) or without playwright, the browser
tests are skipped with the reason; `USPL_REQUIRE_BROWSER=1` (set by CI) turns that skip into a failure.
"""
import os, shutil
from contextlib import contextmanager
from pathlib import Path
import pytest

FLAGS = ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage']

def chromium_path() -> str | None:
    "The Chromium executable: `USPL_CHROMIUM` when set, else the first of chromium/chromium-browser/google-chrome on PATH."
    exe = os.environ.get('USPL_CHROMIUM')
    if exe: return exe if Path(exe).is_file() and os.access(exe, os.X_OK) else None
    return next((shutil.which(n) for n in ('chromium', 'chromium-browser', 'google-chrome') if shutil.which(n)), None)

def missing() -> str | None:
    "Why the browser tests cannot run here, or None."
    exe = chromium_path()
    if exe is None:
        where = f"USPL_CHROMIUM={os.environ['USPL_CHROMIUM']} is not an executable" if os.environ.get('USPL_CHROMIUM') else 'none on PATH'
        return f'no Chromium ({where}): install Debian chromium (`apt-get install chromium`; `make test` does it as root)'
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'no playwright: pip install playwright (in the dev requirements)'
    return None

def require_browser():
    "Skip the calling test (or fixture) when no browser can run; fail instead under `USPL_REQUIRE_BROWSER=1`."
    why = missing()
    if why is None: return
    if os.environ.get('USPL_REQUIRE_BROWSER') == '1': pytest.fail(f'browser required (USPL_REQUIRE_BROWSER=1) but {why}')
    pytest.skip(why)

@contextmanager
def chromium(**launch):
    "A headless Chromium (playwright `Browser`), closed on exit."
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS, **launch)
        try: yield b
        finally: b.close()

def is_local(url: str) -> bool:
    "Whether a request stays on this machine (file:, data:, blob:, about:, or localhost)."
    from urllib.parse import urlsplit
    u = urlsplit(url)
    return u.scheme in ('file', 'data', 'blob', 'about') or u.hostname in ('localhost', '127.0.0.1', '::1')

"""The docs: the static HTML build opens in headless Chromium with its title and a rendered `show_doc` section;
README.md is generated from nbs/index.ipynb and must match it."""
import re, shutil, subprocess, tempfile
from pathlib import Path
import pytest
from conftest import ROOT

def _browser():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if shutil.which(name): return shutil.which(name)

def dump_dom(url:str) -> str:
    "The DOM of `url` after headless Chromium has rendered it."
    exe = _browser()
    if exe is None: pytest.fail('no Chromium found: .ci/run installs Debian chromium (apt-get install chromium)')
    with tempfile.TemporaryDirectory() as prof:
        args = [exe, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                '--disable-component-update', '--disable-sync', f'--user-data-dir={prof}', '--dump-dom', url]
        r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    from uspl.docs import build_docs
    return build_docs(tmp_path_factory.mktemp('docs')/'_docs', root=ROOT, force=True)

def test_index_page_in_browser(site):
    dom = dump_dom((site/'index.html').as_uri())
    assert re.search(r'<title>uspl – uspl</title>', dom), dom[:500]
    assert 'Two commands' in dom
    for page in ('core.html', 'docs.html'): assert f'href="{page}"' in dom

def test_api_page_in_browser(site):
    dom = dump_dom((site/'core.html').as_uri())
    assert '<title>Core – uspl</title>' in dom
    # a rendered show_doc section: the heading with the object's anchor and its signature/parameter table
    assert re.search(r'<h3[^>]*id="USPLConfig"', dom), 'no rendered show_doc heading for USPLConfig'
    assert 'beta_l' in dom and '0.4' in dom

def test_readme_matches_index():
    from uspl.docs import readme_text
    want = readme_text(ROOT/'nbs'/'index.ipynb')
    assert (ROOT/'README.md').read_text() == want, 'README.md is out of date: run `make sync`'

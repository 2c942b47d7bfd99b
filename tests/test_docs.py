"""The docs site in headless Chromium: every page loads with no console error and no request leaving the machine,
its images load, its formulas are MathJax output (not `$...$` text), its links resolve, its sidebar lists the site
and every `show_doc` of its notebook rendered. README.md is generated from nbs/index.ipynb and must match it.

The site is built once per module: from every notebook when the slow cells are asked for (`USPL_TEST_FLAGS=slow`,
what `make test` and CI run) or with `USPL_DOCS_FULL=1`, else from a few notebooks (`USPL_DOCS_FULL=0` forces the
subset). The executed notebooks are cached under `_proc/docs_cache`, so a rebuild runs only the notebooks that changed
(any change to the library's source runs them all). Every built page is checked: it renders, its `show_doc`s are
there, no cell left an error output, its sidebar names every page by title under its section; each component page
carries a figure of a fast cell. Without Chromium or playwright the browser tests are skipped with the reason (see
`_browser.py`).
"""
import html, json, os, re, subprocess, sys
from pathlib import Path
from urllib.parse import urlsplit, unquote
import pytest
from conftest import ROOT
from _browser import require_browser, chromium, is_local
from uspl.apps.docs import nb_title

SUBSET = ['index.ipynb', '00_core.ipynb', '70_apps/72_widgets.ipynb', '70_apps/75_docs.ipynb', '90_results.ipynb']
# the pages of the method's components and of the method itself: each shows a figure computed by a fast cell
FIGURE_PAGES = [f'20_components/{n}.html' for n in ('encoders', 'mmicl', 'trimap', 'affinity', 'smr', 'sps')] + ['30_methods/uspl.html']

def full_build() -> bool:
    "Whether the whole site is built: `USPL_DOCS_FULL` when set (1 or 0), else when the slow cells are asked for (CI)."
    flag = os.environ.get('USPL_DOCS_FULL')
    return flag == '1' if flag in ('0', '1') else 'slow' in os.environ.get('USPL_TEST_FLAGS', '').split()

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    require_browser()   # skip before the (long) build when no browser can look at it
    import time
    from uspl.apps.docs import build_docs
    t0 = time.perf_counter()
    out = build_docs(tmp_path_factory.mktemp('docs')/'_docs', root=ROOT, notebooks=None if full_build() else SUBSET, verbose=True)
    st = _stats(out)
    print(f"docs: {len(st['pages'])} pages in {time.perf_counter() - t0:.0f} s ({sum(p['seconds'] > 0 for p in st['pages'])} executed, "
          f"{sum(p['seconds'] for p in st['pages']):.0f} s of execution)")
    return out

@pytest.fixture(scope='module')
def served(site):
    "The site over http on localhost (browsers refuse web fonts from file:// pages); the base URL."
    import functools, threading
    from http.server import ThreadingHTTPServer, SimpleHTTPRequestHandler
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *a): pass
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(Quiet, directory=str(site)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try: yield f'http://127.0.0.1:{srv.server_address[1]}/'
    finally: srv.shutdown(); srv.server_close()

@pytest.fixture(scope='module')
def browser(site):
    with chromium() as b: yield b

def _stats(site): return json.loads((site/'pages.json').read_text())

def _ids(path: Path) -> set:
    return {html.unescape(i) for i in re.findall(r'\sid="([^"]+)"', path.read_text())}

_CHECK = """() => {
  const text = el => { const c = el.cloneNode(true); c.querySelectorAll('pre, code, script, .highlight').forEach(e => e.remove()); return c.textContent; };
  const md = Array.from(document.querySelectorAll('.jp-RenderedMarkdown')).map(text).join('\\n');
  return {images: Array.from(document.images).map(i => [i.src.slice(0, 80), i.complete, i.naturalWidth]),
          formulas: document.querySelectorAll('.MathJax, .MathJax_Display').length,
          errors: document.querySelectorAll('.MathJax_Error, merror, .noError').length,
          raw_math: (md.match(/\\$\\$[^$]+\\$\\$|\\$[^$\\s][^$\\n]*\\$/g) || []).slice(0, 5),
          links: Array.from(document.querySelectorAll('a[href]')).map(a => a.href),
          fonts: Array.from(document.styleSheets).flatMap(s => { try { return Array.from(s.cssRules); } catch (e) { return []; } })
                   .filter(r => r instanceof CSSFontFaceRule).map(r => r.style.getPropertyValue('src')),
          sidebar: Array.from(document.querySelectorAll('nav.uspl-sidebar li a')).map(a => [a.getAttribute('href'), a.getAttribute('aria-current'), a.textContent]),
          sections: Array.from(document.querySelectorAll('nav.uspl-sidebar .uspl-section-name')).map(s => s.textContent),
          h1: Array.from(document.querySelectorAll('h1')).map(h => h.textContent.replace(/¶$/, '').trim()).slice(0, 1),
          text: document.body.innerText};
}"""

def _load(browser, url):
    "Open `url`; return what the page reported (console errors, page errors, requests that left the machine) and `_CHECK`."
    page = browser.new_page()
    errors, remote = [], []
    page.on('console', lambda m: errors.append(f'console {m.type}: {m.text}') if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(f'page error: {e}'))
    def route(r):
        if is_local(r.request.url): r.continue_()
        else: remote.append(r.request.url); r.abort()
    page.route('**/*', route)
    page.goto(url, wait_until='load')
    page.wait_for_function('window.MathJax && MathJax.isReady', timeout=30_000)
    page.evaluate('() => new Promise(r => MathJax.Hub.Queue(r))')   # after MathJax has typeset the page
    got = page.evaluate(_CHECK)
    page.close()
    return errors, remote, got

def _show_docs(nb: Path) -> list:
    "The names a notebook documents with a visible `show_doc(...)`."
    from uspl.apps.docs import directives
    out = []
    for c in json.loads(nb.read_text())['cells']:
        src = ''.join(c['source'])
        d = directives(src)
        if c['cell_type'] != 'code' or 'hide' in d or d.get('eval', '').lower() == 'false' or d.get('include') == 'false': continue
        out += re.findall(r'^show_doc\(\s*([\w.]+)', src, re.M)
    return out

def test_site_pages_in_browser(site, served, browser):
    st = _stats(site)
    print('links to names with no rendered doc (pointed at their page):', st['unanchored'])
    built, known = {p['page'] for p in st['pages']}, set(st['site'])
    titles = {n: nb_title(nb) for n, nb in _notebooks_by_page().items()}
    sections = list(dict.fromkeys(_section_of(n, st['sections']) for n in st['site'] if '/' in n))
    total_formulas, problems = 0, []
    for p in st['pages']:
        name = p['page']
        errors, remote, got = _load(browser, served + name)
        bad = errors + [f'request left the machine: {u}' for u in remote]
        bad += [f'image not loaded: {s}' for s, ok, w in got['images'] if not (ok and w > 0)]
        for src in got['fonts']:   # each declared font's first source a file of the site (the browser fetches it when a glyph needs it)
            for u in re.findall(r'url\(["\']?([^"\')]+)', src)[:1]:
                f = site/unquote(urlsplit(u).path).lstrip('/')
                if not (u.startswith(served) and f.is_file()): bad.append(f'font not on the site: {u}')
        bad += [f'raw maths: {m!r}' for m in got['raw_math']] + ([f"{got['errors']} MathJax errors"] if got['errors'] else [])
        if [h for h, *_ in got['sidebar']] != [('../' * name.count('/')) + n for n in st['site']]: bad.append(f"sidebar: {got['sidebar']}")
        if [h for h, cur, _ in got['sidebar'] if cur == 'page'] != [('../' * name.count('/')) + name]: bad.append('sidebar: current page not marked')
        if [t for *_, t in got['sidebar']] != [titles[n] for n in st['site']]: bad.append(f"sidebar titles: {[t for *_, t in got['sidebar']]}")
        if got['sections'] != sections: bad.append(f"sidebar sections: {got['sections']}")
        if got['h1'] != [titles[name]]: bad.append(f"page title {got['h1']}, notebook's title {titles[name]!r}")
        bad += [f'error output: {e}' for e in p['errors']]
        if re.search(r'^(output-file|title|description):', got['text'], re.M): bad.append('front matter shown as text')
        for url in got['links']:
            if not url.startswith(served): continue
            u = urlsplit(url)
            path, frag = site/unquote(u.path).lstrip('/'), unquote(u.fragment)
            rel = path.relative_to(site).as_posix() if path.is_relative_to(site) else None
            if not path.exists():
                if rel not in known: bad.append(f'link to a missing file: {url}')
                continue
            ids_there = _ids(path)   # a browser matches the fragment as written, then percent-decoded (nbconvert keeps `%5C` in ids of headings with maths)
            if frag and path.suffix == '.html' and frag not in ids_there and u.fragment not in ids_there: bad.append(f'link to a missing anchor: {url}')
        ids = _ids(site/name)
        low = {i.lower() for i in ids}
        bad += [f'show_doc({n}) not rendered' for n in _show_docs(ROOT/'nbs'/p['notebook']) if n.lower() not in low]
        total_formulas += got['formulas']
        print(f"{name}: {len(got['images'])} images, {got['formulas']} formulas, {len(got['links'])} links")
        problems += [f'{name}: {b}' for b in bad]
    assert not problems, '\n'.join(problems[:40])
    assert total_formulas > 0, 'no formula rendered anywhere'
    assert {'index.html', '70_apps/widgets.html', 'results.html'} <= built
    if full_build(): assert built == known, f'pages not built: {sorted(known - built)}'

def _notebooks_by_page() -> dict:
    from uspl.apps.docs import docs_notebooks, page_name
    return {page_name(p.relative_to(ROOT/'nbs')): p for p in docs_notebooks(ROOT/'nbs')}

def _section_of(page, sections):
    from uspl.apps.docs import _folder_name
    folder = page.rsplit('/', 1)[0]
    return sections.get(folder, _folder_name(folder))

def test_site_order_titles_and_sections(site):
    "The sidebar's order is the pipeline's (the notebooks' paths), each page is named by its notebook's title, and every folder has a readable section name from nbs/_quarto.yml."
    st = _stats(site)
    pages = _notebooks_by_page()
    assert st['site'] == list(pages), st['site']
    assert st['site'][0] == 'index.html' and st['site'][-1] == 'results.html'
    assert st['titles'] == {n: nb_title(p) for n, p in pages.items()}
    assert not [t for t in st['titles'].values() if re.match(r'^\d+_', t)], 'a page named by its file'
    folders = {n.rsplit('/', 1)[0] for n in st['site'] if '/' in n}
    assert folders == set(st['sections']), f"folders without a section name in nbs/_quarto.yml: {sorted(folders - set(st['sections']))}"

def test_site_component_figures(site):
    "Each component page and the method's page show a figure computed by a fast cell (the site runs no slow cell)."
    if not full_build(): pytest.skip('the component pages are built in the full build (USPL_TEST_FLAGS=slow or USPL_DOCS_FULL=1)')
    st = {p['page']: p for p in _stats(site)['pages']}
    missing = [n for n in FIGURE_PAGES if st[n]['images'] < 1]
    assert not missing, f'no figure on {missing}'
    for n in FIGURE_PAGES:
        assert re.search(r'<img[^>]+src="data:image/png;base64,', (site/n).read_text()), n

def test_site_widgets_page(site, served, browser):
    "The widgets page: its figure and the viewer's snapshot (panels as images, the sliders at their values) and maths."
    errors, remote, got = _load(browser, served + '70_apps/widgets.html')
    assert not errors and not remote, errors + remote
    assert len(got['images']) >= 3, got['images']          # the viewer's panels
    assert got['formulas'] >= 1
    dom = (site/'70_apps'/'widgets.html').read_text()
    assert re.search(r'class="widget-slider"><span class="widget-desc">β</span>', dom), 'no β slider in the snapshot'
    assert 'id="RefineViewer"' in dom

def test_site_index_page(site, served, browser):
    errors, remote, got = _load(browser, served + 'index.html')
    assert not errors and not remote, errors + remote
    st = _stats(site)
    assert [p['page'] for p in st['pages']][0] == 'index.html' and st['site'][0] == 'index.html'
    assert {'core.html', 'widgets.html', 'docs.html'} <= {Path(urlsplit(u).path).name for u in got['links']}
    assert re.search(r'<title>uspl – uspl</title>', (site/'index.html').read_text())
    loaded = [s for s, ok, w in got['images'] if ok and w > 0 and s.startswith('data:image/png')]
    assert loaded, f"the pipeline figure is not on the home page: {got['images']}"

def test_browser_tests_skip_without_chromium():
    "With no Chromium to be found, the browser tests report skipped with the reason, and pytest succeeds."
    env = dict(os.environ, USPL_CHROMIUM='/nonexistent/chromium')
    env.pop('USPL_REQUIRE_BROWSER', None)
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-rs', '-p', 'no:cacheprovider', '-k', 'site_ or lab_',
                        'tests/test_docs.py', 'tests/test_jupyterlab.py'], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert re.search(r'\b[4-9] skipped\b', out) and 'failed' not in out and 'passed' not in out, out[-3000:]
    assert 'no Chromium (USPL_CHROMIUM=/nonexistent/chromium is not an executable)' in out, out[-3000:]
    env['USPL_REQUIRE_BROWSER'] = '1'
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', '-k', 'index_page', 'tests/test_docs.py'],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and 'browser required' in r.stdout, r.stdout[-2000:]

def test_readme_matches_index():
    from uspl.apps.docs import readme_text
    want = readme_text(ROOT/'nbs'/'index.ipynb')
    assert (ROOT/'README.md').read_text() == want, 'README.md is out of date: run `make sync`'

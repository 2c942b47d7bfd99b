"""The `RefineViewer` in a real JupyterLab in headless Chromium: run the widgets notebook, move the β and t sliders
with the keyboard and choose another scene in the sample selector, and check from screenshots of the viewer's panels
that the maps were redrawn and that the IoU readout followed; measure the time from a key step to the redraw.

JupyterLab runs on a free localhost port with a random token, on a copy of `nbs/`, and is shut down even when the
test fails. Without Chromium or playwright the test is skipped with the reason (see `_browser.py`).
"""
import io, json, os, re, secrets, shutil, signal, socket, statistics, subprocess, sys, time, urllib.request
from pathlib import Path
import numpy as np
import pytest
from conftest import ROOT
from _browser import require_browser, chromium

NB = '70_apps/72_widgets.ipynb'

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def lab(tmp_path_factory):
    "A JupyterLab server on a copy of nbs/: (base url, token, log path); terminated (then killed) on teardown."
    require_browser()
    tmp = tmp_path_factory.mktemp('lab')
    shutil.copytree(ROOT/'nbs', tmp/'nbs', ignore=shutil.ignore_patterns('_scratch', '.ipynb_checkpoints'))
    settings = tmp/'settings'/'@jupyterlab'/'notebook-extension'
    settings.mkdir(parents=True)
    (settings/'tracker.jupyterlab-settings').write_text(json.dumps({'windowingMode': 'none'}))  # every cell in the DOM
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp/'config'), JUPYTER_RUNTIME_DIR=str(tmp/'runtime'),
               JUPYTERLAB_WORKSPACES_DIR=str(tmp/'workspaces'))
    env.pop('MPLBACKEND', None)   # as a user's JupyterLab: the inline backend
    log = open(tmp/'lab.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'jupyterlab', '--no-browser', f'--port={port}', '--ip=127.0.0.1',
                             f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={tmp/"nbs"}', '--ServerApp.port_retries=0',
                             f'--LabApp.user_settings_dir={tmp/"settings"}', f'--LabApp.workspaces_dir={tmp/"workspaces"}',
                             '--LabApp.extension_manager=readonly'] + (['--allow-root'] if os.geteuid() == 0 else []),
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f'http://127.0.0.1:{port}'
        for _ in range(240):
            if proc.poll() is not None: pytest.fail(f'JupyterLab exited: {(tmp/"lab.log").read_text()[-2000:]}')
            try:
                with urllib.request.urlopen(f'{base}/api/status?token={token}', timeout=2) as r:
                    if r.status == 200: break
            except OSError: time.sleep(0.5)
        else: pytest.fail(f'JupyterLab did not answer within 2 minutes: {(tmp/"lab.log").read_text()[-2000:]}')
        yield base, token, tmp
    finally:
        if proc.poll() is None:
            proc.terminate()   # the server shuts its kernels down
            try: proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL); proc.wait(timeout=10)
        log.close()

def _png(b: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(b)).convert('RGB')).astype(np.int16)

def _changed(a: list, b: list) -> float:
    "The largest fraction of pixels that differ (by more than a little) between matching screenshots."
    return max((float((np.abs(x - y).max(-1) > 8).mean()) if x.shape == y.shape else 1.) for x, y in zip(a, b))

# In the page: remember when the next key goes down, and resolve with the ms from it until an image of the viewer has a
# new source and two frames have been painted.
_ARM = """root => { window.__lat = new Promise(resolve => {
  const imgs = Array.from(root.querySelectorAll('img')), before = imgs.map(i => i.src);
  let t0 = null;
  document.addEventListener('keydown', () => { t0 = performance.now(); }, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (t0 === null || !imgs.some((i, k) => i.src !== before[k])) return;
    obs.disconnect();
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
  });
  obs.observe(root, {attributes: true, subtree: true, attributeFilter: ['src']});
  setTimeout(() => { obs.disconnect(); resolve(null); }, 10000);
}); }"""

def test_lab_viewer_sliders(lab, tmp_path):
    base, token, tmp = lab
    with chromium() as browser:
        page = browser.new_page(viewport={'width': 1366, 'height': 900})   # a laptop
        errors = []
        page.on('pageerror', lambda e: errors.append(str(e)))
        try: _drive(page, base, token, Path(os.environ.get('USPL_LAB_SHOTS', tmp_path)))
        except Exception:
            page.screenshot(path=str(tmp_path/'failure.png')); raise
        finally: page.close()

def _drive(page, base, token, shots):
    page.goto(f'{base}/lab/tree/{NB}?token={token}', wait_until='domcontentloaded')
    page.wait_for_selector('.jp-NotebookPanel .jp-Notebook .jp-Cell', timeout=120_000)
    try:   # JupyterLab may ask which kernel to start (the notebook names `python3`): take the one it proposes
        page.locator('.jp-Dialog button', has_text=re.compile(r'^Select$')).click(timeout=10_000)
    except Exception: pass
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)   # kernel started
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    t0 = time.perf_counter()
    page.wait_for_function("""() => { const p = Array.from(document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent);
        return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }""", timeout=240_000)
    run_all = time.perf_counter() - t0
    errs = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has-text("Traceback"), .jp-OutputArea-output:has-text("Error:")')
    assert page.locator('.jp-OutputArea-output pre:has-text("Traceback")').count() == 0, 'a cell raised: ' + errs.first.inner_text()[:2000]

    def slider(desc):
        s = view.locator('.widget-slider', has=page.locator('.widget-label', has_text=re.compile(f'^{re.escape(desc)}$')))
        return s.first if s.count() else None
    outs = page.locator('.jp-OutputArea-output', has=page.locator('.widget-slider .widget-label', has_text=re.compile('^β$')))
    assert outs.count() >= 1, 'no output with a β slider: the viewer did not render'
    view = outs.first
    view.scroll_into_view_if_needed()
    beta, t = slider('β'), slider('t')
    assert beta is not None and t is not None, 'the viewer has no β or no t slider'
    imgs = view.locator('img')
    assert imgs.count() >= 2, 'the viewer shows fewer than two panels'
    for k in range(imgs.count()):
        assert imgs.nth(k).evaluate('i => i.complete && i.naturalWidth > 0'), f'panel {k} did not load'
        box = imgs.nth(k).bounding_box()
        assert box and box['width'] >= 100, f'panel {k} is {box} wide: not legible'
    for s in (beta, t):
        bb = s.locator('.slider-container, .noUi-target').first.bounding_box()
        assert bb and bb['width'] >= 120, f'slider too narrow to drag: {bb}'
        for part in ('.widget-label', '.widget-readout'):   # label and value shown whole, not cut
            cut = s.locator(part).first.evaluate('e => e.scrollWidth > e.clientWidth + 1 || e.offsetWidth === 0')
            assert not cut, f'slider {part} is cut: {s.locator(part).first.inner_text()!r}'
    def readout():
        txt = [e for e in view.locator('.widget-html, .widget-label, .widget-htmlmath').all_inner_texts() if 'IoU' in e]
        return ' | '.join(txt)
    def panels(): return [_png(imgs.nth(k).screenshot()) for k in range(imgs.count())]
    def value(s): return s.locator('.widget-readout').inner_text().strip()
    assert 'IoU' in readout(), 'no IoU readout in the viewer'

    def step(s, key, n=1):
        "Press `key` `n` times on the slider's handle; the ms from each key-down to the redraw."
        h = s.locator('.noUi-handle').first
        h.focus()
        lat = []
        for _ in range(n):
            view.evaluate(_ARM)
            page.keyboard.press(key)
            lat.append(page.evaluate('window.__lat'))
        return lat

    report = {'run_all_s': round(run_all, 1)}
    for name, s, keys in (('t', t, ['ArrowRight'] * 6 + ['ArrowLeft'] * 3), ('β', beta, ['ArrowLeft'] * 6 + ['ArrowRight'] * 3)):
        before, text0, v0 = panels(), readout(), value(s)
        lats = [x for k in keys for x in step(s, k)]
        after, text1, v1 = panels(), readout(), value(s)
        page.screenshot(path=str(shots/f'after_{name}.png'))
        assert v1 != v0, f'the {name} slider did not move ({v0})'
        assert all(x is not None for x in lats), f'{name}: a key step gave no redraw within 10 s: {lats}'
        frac = _changed(before, after)
        assert frac > 0.005, f'{name}: the panels did not change ({frac:.4f} of pixels)'
        assert text1 != text0, f'{name}: the IoU readout did not follow: {text0!r}'
        assert v1 in text1 or re.sub(r'\.?0+$', '', v1) in text1 or name == 'β', f'{name}: readout {text1!r} does not show {v1}'
        report[name] = {'from': v0, 'to': v1, 'changed_pixels': round(frac, 4), 'latency_ms_median': round(statistics.median(lats)),
                        'latency_ms_max': round(max(lats)), 'steps': len(lats), 'readout': text1}

    # the sample selector: another scene redraws every panel, and the readout names it with its IoUs
    sel = view.locator('.widget-dropdown', has=page.locator('.widget-label', has_text=re.compile('^sample$')))
    assert sel.count() == 1, 'the viewer has no sample selector'
    select = sel.first.locator('select')
    assert select.locator('option').count() >= 2, 'the sample selector offers one sample'
    before, text0, all0 = panels(), readout(), view.inner_text()
    t0 = time.perf_counter()
    select.select_option(index=1)
    page.wait_for_function("([el, t]) => el.innerText !== t", arg=[view.element_handle(), all0], timeout=10_000)
    readout_s = time.perf_counter() - t0   # selection to new readout text (polled)
    page.wait_for_timeout(300)   # the panels' new sources painted
    after, text1 = panels(), readout()
    page.screenshot(path=str(shots/'after_sample.png'))
    frac = _changed(before, after)
    changed = [k for k, (x, y) in enumerate(zip(before, after)) if x.shape != y.shape or float((np.abs(x - y).max(-1) > 8).mean()) > 0.005]
    assert frac > 0.005 and len(changed) >= 3, f'sample: the panels did not change ({frac:.4f}; panels {changed})'
    assert text1 != text0 and re.search(r'sample \S+', text1), f'sample: the IoU readout did not follow: {text0!r} -> {text1!r}'
    report['sample'] = {'changed_pixels': round(frac, 4), 'panels_changed': len(changed), 'of': len(before),
                        'readout_s': round(readout_s, 2), 'readout': text1}
    print('\nRefineViewer in JupyterLab:', json.dumps(report, ensure_ascii=False))
    (shots/'report.json').write_text(json.dumps(report, ensure_ascii=False, indent=1))

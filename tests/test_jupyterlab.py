"""The `RefineViewer` in a real JupyterLab in headless Chromium: run the widgets notebook, move the β and t sliders
with the keyboard and choose another scene in the sample selector, and check from screenshots of the viewer's panels
that the maps were redrawn and that the IoU readout followed; measure the time from a key step to the redraw. Then the
viewer on a trained model (`RefineViewer.from_run` on a run of the test size trained for two steps): its audio player
has a source, a sound change redraws the map panels (not the frame), the readout and the player; the time from the
selection to the redrawn readout is printed.

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

# The trained viewer: a notebook that trains a run of the test size for two steps (seconds) and opens
# `RefineViewer.from_run` on it. What the test checks is the plumbing in a real browser (player, sound selector,
# panels, readout, latency), not what a two-step model has learned.
TRAINED_NB = 'trained_viewer_check.ipynb'
_TRAINED_CELLS = [
    "import tempfile\nfrom pathlib import Path\nfrom uspl.core import seed_everything\nfrom uspl.evaluation.compare import size_config\n"
    "from uspl.methods.base import build_method\nfrom uspl.engine.train import train_method\nfrom uspl.data.synthetic import SyntheticScenes\nfrom uspl.apps.widgets import RefineViewer\n"
    "seed_everything(0); cfg = size_config('tiny'); run = Path(tempfile.mkdtemp())/'uspl'\n"
    "train_method(build_method(cfg, 'uspl'), SyntheticScenes.from_config(cfg, 'train', 8), run, max_steps=2, progress=False)",
    "v = RefineViewer.from_run(run, 'synthetic', split='val', n=4)\nv",
]

# In the page: remember when the next `change` event fires (the selection), and resolve with the ms from it until the
# viewer's text holds `want` (the readout, which the kernel updates after every panel) and two frames have been painted.
_ARM_CHANGE = """([root, want]) => { window.__lat = new Promise(resolve => {
  let t0 = null;
  document.addEventListener('change', () => { t0 = performance.now(); }, {capture: true, once: true});
  const obs = new MutationObserver(() => {
    if (t0 === null || !root.innerText.includes(want)) return;
    obs.disconnect();
    requestAnimationFrame(() => requestAnimationFrame(() => resolve(performance.now() - t0)));
  });
  obs.observe(root, {attributes: true, childList: true, characterData: true, subtree: true});
  setTimeout(() => { obs.disconnect(); resolve(null); }, 10000);
}); }"""

def test_lab_trained_viewer(lab, tmp_path):
    import nbformat
    base, token, tmp = lab
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in _TRAINED_CELLS])
    nb.metadata['kernelspec'] = {'display_name': 'python3', 'language': 'python', 'name': 'python3'}
    nbformat.write(nb, str(tmp/'nbs'/TRAINED_NB))
    with chromium() as browser:
        page = browser.new_page(viewport={'width': 1366, 'height': 900})
        try: _drive_trained(page, base, token, Path(os.environ.get('USPL_LAB_SHOTS', tmp_path)))
        except Exception:
            page.screenshot(path=str(tmp_path/'failure_trained.png')); raise
        finally: page.close()

def _run_all(page, base, token, nb):
    "Open `nb` in JupyterLab (in a workspace of its own: nothing of another test restored), run all its cells, wait until each has run; the seconds it took. Fails on a traceback."
    page.goto(f'{base}/lab/workspaces/{Path(nb).stem}/tree/{nb}?token={token}', wait_until='domcontentloaded')
    page.wait_for_selector('.jp-NotebookPanel .jp-Notebook .jp-Cell', timeout=120_000)
    try: page.locator('.jp-Dialog button', has_text=re.compile(r'^Select$')).click(timeout=10_000)
    except Exception: pass
    page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=120_000)
    page.locator('.lm-MenuBar-itemLabel', has_text=re.compile(r'^Run$')).click()
    page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$')).click()
    t0 = time.perf_counter()
    # the notebook's own panel: JupyterLab may restore another test's notebook in a hidden tab
    page.wait_for_function("""() => { const p = Array.from(document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-InputPrompt')).map(e => e.textContent);
        return p.length > 0 && p.every(t => /\\[\\d+\\]/.test(t)); }""", timeout=300_000)
    tb = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output pre:has-text("Traceback")')
    assert tb.count() == 0, 'a cell raised: ' + tb.first.inner_text()[:2000]
    return time.perf_counter() - t0

def _drive_trained(page, base, token, shots):
    report = {'run_all_s': round(_run_all(page, base, token, TRAINED_NB), 1)}
    outs = page.locator('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output', has=page.locator('.widget-dropdown .widget-label', has_text=re.compile('^sound$')))
    assert outs.count() == 1, 'no output with a sound selector: the trained viewer did not render'
    view = outs.first
    view.scroll_into_view_if_needed()
    # the player: an <audio> element whose source is the clip (a blob or data URL), not played
    audio = view.locator('audio')
    assert audio.count() == 1, 'the viewer has no audio player'
    page.wait_for_function('a => !!a.currentSrc || !!a.src', arg=audio.first.element_handle(), timeout=10_000)
    src0 = audio.first.evaluate('a => a.currentSrc || a.src')
    assert src0, 'the audio player has an empty source'
    imgs = view.locator('img')
    assert imgs.count() >= 7, f'the trained viewer shows {imgs.count()} panels (frame, mask, coarse, PAMR, tri-map, fine, SPS expected)'
    for k in range(imgs.count()): assert imgs.nth(k).evaluate('i => i.complete && i.naturalWidth > 0'), f'panel {k} did not load'
    def readout():
        return ' | '.join(e for e in view.locator('.widget-html').all_inner_texts() if 'IoU' in e)
    def panels(): return [_png(imgs.nth(k).screenshot()) for k in range(imgs.count())]
    text0 = readout()
    assert 'IoU' in text0 and 'sound: val_000000' in text0 and '(its own)' in text0, f'readout: {text0!r}'

    # a β step (keyboard), as in the stand-in viewer's test: the latency of a slider move on a trained model
    beta = view.locator('.widget-slider', has=page.locator('.widget-label', has_text=re.compile('^β$'))).first
    beta.locator('.noUi-handle').first.focus()
    lat_beta = []
    for key in ['ArrowLeft'] * 4 + ['ArrowRight'] * 2:
        view.evaluate(_ARM); page.keyboard.press(key); lat_beta.append(page.evaluate('window.__lat'))
    assert all(x is not None for x in lat_beta), f'β: a key step gave no redraw within 10 s: {lat_beta}'
    report['beta'] = {'latency_ms_median': round(statistics.median(lat_beta)), 'latency_ms_max': round(max(lat_beta)), 'steps': len(lat_beta)}

    # the sound selector: another scene's sound on frame 0 redraws the sound's panels, the readout and the player
    select = view.locator('.widget-dropdown', has=page.locator('.widget-label', has_text=re.compile('^sound$'))).first.locator('select')
    n_opts = select.locator('option').count()
    assert n_opts >= 3, f'the sound selector offers {n_opts} sounds'
    before, lat_sound, texts = panels(), [], []
    for idx in (1, 2, 3, 1, 2):   # three sounds new to the frame, then two heard before (their maps cached)
        page.evaluate(_ARM_CHANGE, [view.element_handle(), f'sound: val_00000{idx}'])
        select.select_option(index=idx)
        lat_sound.append(page.evaluate('window.__lat'))
        texts.append(readout())
    assert all(x is not None for x in lat_sound), f'sound: a selection gave no redraw within 10 s: {lat_sound}'
    page.wait_for_timeout(300)
    after, text1 = panels(), readout()
    page.screenshot(path=str(shots/'after_sound.png'))
    changed = [k for k, (x, y) in enumerate(zip(before, after)) if x.shape != y.shape or float((np.abs(x - y).max(-1) > 8).mean()) > 0.005]
    assert 0 not in changed, 'the frame panel changed with the sound'
    assert len(changed) >= 3, f'sound: the map panels did not change (changed: {changed})'
    assert 'sound: val_000002' in text1 and 'swing' in text1 and text1 != text0, f'sound: the readout did not follow: {text1!r}'
    src1 = audio.first.evaluate('a => a.currentSrc || a.src')
    assert src1 and src1 != src0, 'the player did not take the new sound'
    report['sound'] = {'latency_ms': [round(x) for x in lat_sound], 'latency_ms_median_new': round(statistics.median(lat_sound[:3])),
                       'latency_ms_max': round(max(lat_sound)), 'panels_changed': changed, 'readout': text1}
    print('\nRunViewer (trained, test size) in JupyterLab:', json.dumps(report, ensure_ascii=False))
    (shots/'report_trained.json').write_text(json.dumps(report, ensure_ascii=False, indent=1))
    assert max(lat_sound) < 5000, f'a sound change took {max(lat_sound):.0f} ms to redraw'   # a stall, not the 300 ms goal (reported)

"""Bad input gives one line and exit code 2, run folders are owned and never mixed, data problems are counted (issue 18).

The CLI runs in-process (`uspl.apps.cli.main`) on tiny configs; subprocesses only where a second process or a signal is the point."""
import contextlib, io, json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import soundfile as sf
import torch
from uspl.apps.cli import main

TINY = {"img_size": 64, "visual_backbone": "resnet18", "audio_encoder": "vggish_small", "embed_dim": 32, "aff_dim": 16,
        "fpn_dim": 16, "head_dim": 16, "aspp_dim": 8, "batch_size": 4, "synth_train": 16, "synth_val": 8, "synth_test": 8,
        "warmup_epochs": 1, "epochs": 1, "num_workers": 0, "radius": 3, "pamr_iters": 3}

def cli(*argv):
    "Run `uspl ARGV` in this process: (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: code = main([str(a) for a in argv])
        except SystemExit as e: code = e.code
    return code, out.getvalue(), err.getvalue()

def one_line_error(code, err, phrase):
    "Exit 2, no traceback, one line `uspl...` holding `phrase` (a string, or a tuple of strings all there)."
    lines = err.strip().splitlines()
    assert code == 2, err
    assert 'Traceback' not in err, err
    assert len(lines) == 1 and lines[0].startswith('uspl'), err
    for p in (phrase if isinstance(phrase, tuple) else (phrase,)): assert p in lines[0], err

@pytest.fixture(scope='module')
def W(tmp_path_factory):
    "The shared material: config files, a finished tiny run, dataset roots in both layouts, a file, an empty folder."
    d = tmp_path_factory.mktemp('errors')
    def cfg(name, **kw):
        p = d/f'{name}.json'; p.write_text(json.dumps({**TINY, **kw})); return p
    w = dict(d=d, cfg=cfg, tiny=cfg('tiny'), file=d/'a_file', empty=d/'empty')
    w['file'].write_text('x'); w['empty'].mkdir()
    code, out, err = cli('train', '--out', d/'run', '--config', w['tiny'], '--no-progress', '--device', 'cpu', '--max-steps', '2')
    assert code == 0, err
    w['run'] = d/'run'
    from uspl.core import USPLConfig
    from uspl.data.synthetic import SyntheticScenes, write_synthetic
    c = USPLConfig.from_dict(TINY)
    splits = {s: SyntheticScenes.from_config(c, s, n) for s, n in (('train', 4), ('val', 4), ('test', 4))}
    write_synthetic(splits, d/'s4', 's4', audio_sec=5.0)
    write_synthetic({s: splits[s] for s in ('train', 'test')}, d/'vggss', 'vggss', audio_sec=3.0)
    w['s4'], w['vggss'] = d/'s4', d/'vggss'
    return w

def _train(w, *extra, out=None, cfg=None):
    return ('train', '--out', out or w['d']/'new', '--config', cfg or w['tiny'], '--no-progress', '--device', 'cpu') + extra

def _damaged(w, layout, case, *damages):
    "A copy of the shared `layout` root ('s4' or 'vggss') with each `damage(root)` applied, made once per case."
    root = w['d']/f'{layout}-{case}'
    if not root.exists():
        shutil.copytree(w[layout], root)
        for damage in damages: damage(root)
    return root

def _wav(root, vid): return next(root.rglob(f'{vid}.wav'))  # S4 audio_wav/test/CAT/VID.wav, VGGSS audio/VID.wav

def _nan_wav(vid):
    def f(root):
        w, sr = sf.read(_wav(root, vid), dtype='float32'); w[10] = np.nan; sf.write(_wav(root, vid), w, sr, subtype='FLOAT')
    return f

def _silent_wav(vid):
    def f(root):
        w, sr = sf.read(_wav(root, vid), dtype='float32'); sf.write(_wav(root, vid), np.zeros_like(w), sr)
    return f

def _zero_mask(vid):
    def f(root):
        from PIL import Image
        p = next(root.rglob(f'gt_masks/test/*/{vid}/{vid}_1.png'))
        with Image.open(p) as im: size = im.size
        Image.fromarray(np.zeros(size[::-1], np.uint8)).save(p)
    return f

def _grey_mask(vid):
    "A mask saved with anti-aliasing: values other than {0, 255}."
    def f(root):
        from PIL import Image
        p = next(root.rglob(f'gt_masks/test/*/{vid}/{vid}_1.png'))
        with Image.open(p) as im: a = np.asarray(im.convert('L')).copy()
        a[a > 0] = 200; a[0, :5] = 77; Image.fromarray(a).save(p)
    return f

def _no_frames(*vids):
    "Delete the frames of the S4 test videos `vids` (all of them when none is named)."
    def f(root):
        for p in list(root.rglob('visual_frames/test/*/*/*.png')):
            if not vids or p.parent.name in vids: p.unlink()
    return f

def _s4_csv(edit):
    "Edit the lines of s4_meta_data.csv."
    def f(root):
        p = next(root.rglob('s4_meta_data.csv')); p.write_text('\n'.join(edit(p.read_text().splitlines())) + '\n')
    return f

def _vggss_json(edit):
    "Edit the entries of metadata/vggss.json."
    def f(root): p = root/'metadata/vggss.json'; p.write_text(json.dumps(edit(json.loads(p.read_text()))))
    return f

def _box(vid, box): return _vggss_json(lambda es: [dict(e, bbox=box) if e['file'] == vid else e for e in es])

def _eval(w, layout, case, *damages, extra=()):
    return ('eval', '--run', w['run'], '--dataset', layout, '--root', _damaged(w, layout, case, *damages)) + tuple(extra)

_S4_DUP = _s4_csv(lambda ls: ls + [l for l in ls if l.startswith('test_000001,')])

# (case, argv from the shared material, the phrase the one line must contain: a string or a tuple of strings)
CASES = [
    ('empty folder as S4 root', lambda w: _train(w, '--dataset', 's4', '--root', w['empty']), 'no s4_meta_data.csv'),
    ('empty folder as VGGSS root', lambda w: _train(w, '--dataset', 'vggss', '--root', w['empty']), 'vggss.json'),
    ('S4 layout given as VGGSS', lambda w: _train(w, '--dataset', 'vggss', '--root', w['s4']), 'vggss.json'),
    ('VGGSS layout given as S4', lambda w: _train(w, '--dataset', 's4', '--root', w['vggss']), 'no s4_meta_data.csv'),
    ('empty S4 root at eval', lambda w: ('eval', '--run', w['run'], '--dataset', 's4', '--root', w['empty']), 'no s4_meta_data.csv'),
    ('string batch_size', lambda w: _train(w, cfg=w['cfg']('c1', batch_size='4')), 'batch_size'),
    ('lambdas of length 2', lambda w: _train(w, cfg=w['cfg']('c2', lambdas=[0.1, 0.9])), 'lambdas'),
    ('batch_size 1', lambda w: _train(w, cfg=w['cfg']('c3', batch_size=1)), 'batch_size'),
    ('negative batch_size', lambda w: _train(w, cfg=w['cfg']('c4', batch_size=-4)), 'batch_size'),
    ('negative lr', lambda w: _train(w, cfg=w['cfg']('c5', lr=-1e-3)), 'lr'),
    ('epochs 0', lambda w: _train(w, cfg=w['cfg']('c6', epochs=0)), 'epochs'),
    ('epochs -1', lambda w: _train(w, cfg=w['cfg']('c7', epochs=-1)), 'epochs'),
    ('epochs 1.5', lambda w: _train(w, cfg=w['cfg']('c8', epochs=1.5)), 'epochs'),
    ('symmetric "no"', lambda w: _train(w, cfg=w['cfg']('c9', symmetric='no')), 'symmetric'),
    ('unknown optimizer', lambda w: _train(w, cfg=w['cfg']('c10', optimizer='lamb')), 'optimizer'),
    ('unknown freeze_bn', lambda w: _train(w, cfg=w['cfg']('c11', freeze_bn='some')), 'freeze_bn'),
    ('drop 1.5', lambda w: _train(w, cfg=w['cfg']('c12', drop=1.5)), 'drop'),
    ('beta -1', lambda w: _train(w, cfg=w['cfg']('c13', beta=-1)), 'beta'),
    ('img_size 8', lambda w: _train(w, cfg=w['cfg']('c14', img_size=8)), 'img_size'),
    ('eval_path unknown', lambda w: _train(w, cfg=w['cfg']('c15', eval_path='fine')), 'eval_path'),
    ('unknown backbone', lambda w: _train(w, cfg=w['cfg']('c16', visual_backbone='resnet_nope')), ('resnet_nope', 'visual_backbone')),
    ('batch_size above the dataset', lambda w: _train(w, cfg=w['cfg']('c17', batch_size=32)), 'fewer than one batch'),
    ('--out is a file', lambda w: _train(w, out=w['file']), 'is a file'),
    ('--out under a file', lambda w: _train(w, out=w['file']/'run'), 'is a file'),
    ('--out not creatable', lambda w: _train(w, out='/proc/uspl_run/x'), 'cannot create'),
    ('demo --out is a file', lambda w: ('demo', '--size', 'tiny', '--out', w['file']), 'is a file'),
    ('compare --jobs 0', lambda w: ('compare', '--size', 'tiny', '--out', w['d']/'jobs', '--jobs', '0'), '--jobs must be >= 1, got 0'),
    ('demo --jobs -2', lambda w: ('demo', '--size', 'tiny', '--out', w['d']/'jobs', '--jobs', '-2'), '--jobs must be >= 1, got -2'),
    ('compare --jobs two', lambda w: ('compare', '--out', w['d']/'jobs', '--jobs', 'two'), "argument --jobs: invalid int value: 'two'"),
    ('--max-steps 0', lambda w: _train(w, '--max-steps', '0'), '--max-steps'),
    ('--max-steps -1', lambda w: _train(w, '--max-steps', '-1'), '--max-steps'),
    ('eval --batch-size 0', lambda w: ('eval', '--run', w['run'], '--batch-size', '0'), '--batch-size'),
    ('eval --batch-size -3', lambda w: ('eval', '--run', w['run'], '--batch-size', '-3'), '--batch-size'),
    ('eval --checkpoint nope.pt', lambda w: ('eval', '--run', w['run'], '--checkpoint', 'nope.pt'), 'nope.pt'),
    ('finished run without --resume', lambda w: _train(w, out=w['run']), 'already holds a run'),
    ('--resume and --overwrite', lambda w: _train(w, '--resume', '--overwrite', out=w['run']), '--overwrite'),
    ('--resume of a folder without run', lambda w: _train(w, '--resume', out=w['empty']), 'nothing to resume'),
    ('--resume changing the model', lambda w: _train(w, '--resume', out=w['run'], cfg=w['cfg']('c18', img_size=96, embed_dim=64)),
     'img_size 64 -> 96'),
    ('--resume changing the method', lambda w: _train(w, '--resume', '--method', 'ezvsl', out=w['run']), "method 'uspl' -> 'ezvsl'"),
    ('--skip-bad on synthetic', lambda w: _train(w, '--skip-bad'), '--skip-bad applies'),
    ('--binarize on VGGSS', lambda w: ('eval', '--run', w['run'], '--dataset', 'vggss', '--root', w['vggss'], '--binarize'), '--binarize applies'),
    ('S4 NaN audio', lambda w: _eval(w, 's4', 'nan', _nan_wav('test_000001')), ('test_000001.wav holds non-finite samples', '--skip-bad')),
    ('S4 silent audio', lambda w: _eval(w, 's4', 'silent', _silent_wav('test_000001')), 'test_000001.wav is silent (all zeros)'),
    ('S4 all-zero mask', lambda w: _eval(w, 's4', 'mask', _zero_mask('test_000002')), 'test_000002_1.png has no foreground pixel'),
    ('S4 video listed twice', lambda w: _eval(w, 's4', 'dup', _S4_DUP), ('s4_meta_data.csv', "'test_000001' twice")),
    ('S4 split "Test"', lambda w: _eval(w, 's4', 'split', _s4_csv(lambda ls: [l.replace(',test', ',Test') if l.startswith('test_000001,') else l for l in ls])),
     ('s4_meta_data.csv', "split 'Test'")),
    ('VGGSS NaN audio', lambda w: _eval(w, 'vggss', 'nan', _nan_wav('test_000002')), 'test_000002.wav holds non-finite samples'),
    ('VGGSS degenerate box', lambda w: _eval(w, 'vggss', 'degenerate', _box('test_000001', [[0.6, 0.2, 0.3, 0.8]])),
     ('vggss.json, sample test_000001', 'degenerate')),
    ('VGGSS box not normalised', lambda w: _eval(w, 'vggss', 'range', _box('test_000001', [[12, 20, 120, 80]])),
     ('vggss.json, sample test_000001', 'outside [0, 1]')),
    ('VGGSS entry listed twice', lambda w: _eval(w, 'vggss', 'dup', _vggss_json(lambda es: es + es[:1])), ('vggss.json', "'test_000000' twice")),
    ('--skip-bad keeps duplicates refused', lambda w: _eval(w, 's4', 'dup', _S4_DUP, extra=('--skip-bad',)), "'test_000001' twice"),
    ('VGGSS NaN box', lambda w: _eval(w, 'vggss', 'nanbox', _box('test_000001', [[float('nan'), 0.2, 0.5, 0.8]])),
     ('vggss.json, sample test_000001', 'is not finite', '--skip-bad')),
    ('S4 missing frame', lambda w: _eval(w, 's4', 'miss', _no_frames('test_000001')), ('test_000001_1.png', 'not found', 'uspl --skip-missing')),
    ('S4 every frame missing, --skip-missing', lambda w: _eval(w, 's4', 'nofr', _no_frames(), extra=('--skip-missing',)),
     ('no sample of the s4 test split to evaluate', 'all 4 listed were skipped')),
    ('S4 every val frame missing in training', lambda w: _train(w, '--dataset', 's4', '--skip-missing', '--root',
     _damaged(w, 's4', 'noval', lambda r: [p.unlink() for p in list(r.rglob('visual_frames/val/*/*/*.png'))])),
     ('the s4 val set has 0 samples', '4 listed were skipped')),
    ('S4 non-binary mask', lambda w: _eval(w, 's4', 'grey', _grey_mask('test_000001')), ('test_000001_1.png is not binary', 'uspl --binarize')),
    ('--set of a bad value', lambda w: _train(w, '--set', 'train.batch_size=four'), ('argument --set', "'TrainConfig.batch_size' must be an integer")),
    ('--set out of range', lambda w: _train(w, '--set', 'smr.radius=-1'), ('argument --set', 'SMRConfig.radius')),
    ('--set of a group the method lacks', lambda w: _train(w, '--set', 'icl.rho=0.5'), ("--set icl.rho", "use no config group 'icl'")),
    ('--set of a method group out of range', lambda w: _train(w, '--method', 'icl', '--set', 'icl.rho=1.5'), ('argument --set', 'ICLConfig.rho')),
    ('--set without a group', lambda w: _train(w, '--set', 'lr=1'), ('argument --set', 'GROUP.FIELD=VALUE')),
    ('--set and --resume changing the model', lambda w: _train(w, '--resume', '--set', 'encoders.embed_dim=64', out=w['run']), 'embed_dim 32 -> 64'),
    ('--size and --config', lambda w: _train(w, '--size', 'tiny'), 'not allowed with argument --config'),
    ('demo --set unknown field', lambda w: ('demo', '--size', 'tiny', '--out', w['d']/'ds', '--set', 'train.epoch=1'), "has no field 'epoch'"),
    ('compare --set of no method\'s group', lambda w: ('compare', '--size', 'tiny', '--methods', 'ezvsl', '--out', w['d']/'cs', '--set', 'lvs.eps_pos=0.5'),
     "method(s) ezvsl use no config group 'lvs'"),
    ('compare --set train.seed', lambda w: ('compare', '--size', 'tiny', '--out', w['d']/'cs', '--set', 'train.seed=3'), 'trains once per seed of --seeds'),
    ('demo --out under a file', lambda w: ('demo', '--size', 'tiny', '--out', w['file']/'x'), 'is a file'),
    ('demo --out not creatable', lambda w: ('demo', '--size', 'tiny', '--out', '/proc/uspl_demo/x'), 'cannot create'),
]

CASES = [pytest.param(*c, id=c[0]) for c in CASES]

@pytest.mark.parametrize('case,argv,phrase', CASES)
def test_bad_input_is_one_line(W, case, argv, phrase):
    one_line_error(*cli(*argv(W))[::2], phrase)
    assert not (W['d']/'new'/'last.pt').exists()

@pytest.mark.parametrize('layout,damages,bad', [
    ('s4', (_nan_wav('test_000001'), _silent_wav('test_000002'), _zero_mask('test_000003')),
     [('test_000001', 'test_000001.wav holds non-finite samples'), ('test_000002', 'test_000002.wav is silent'),
      ('test_000003', 'test_000003_1.png has no foreground pixel')]),
    ('vggss', (_box('test_000000', [[0.5, 0.5, 0.5, 0.9]]), _silent_wav('test_000003')),
     [('test_000000', 'is degenerate'), ('test_000003', 'test_000003.wav is silent')])])
def test_skip_bad_is_counted(W, layout, damages, bad):
    "`uspl eval --skip-bad`: exit 0, the bad samples left out of `n`, listed with their reasons in the JSON and on stderr."
    code, out, err = cli(*_eval(W, layout, 'skip', *damages, extra=('--skip-bad',)))
    assert code == 0, err
    r = json.loads(out)
    assert r['n'] == 4 - len(bad), r
    assert [s['name'] for s in r['skipped']] == [name for name, _ in bad], r['skipped']
    for s, (_, why) in zip(r['skipped'], bad): assert why in s['reason'], s
    assert f'skipped {len(bad)} sample(s)' in err, err

def test_skip_missing_and_binarize(W):
    "`--skip-missing` counts and lists the sample whose frame is missing; `--binarize` scores a non-binary mask (exit 0)."
    code, out, err = cli(*_eval(W, 's4', 'miss', _no_frames('test_000001'), extra=('--skip-missing',)))
    assert code == 0, err
    r = json.loads(out)
    assert r['n'] == 3 and [s['name'] for s in r['skipped']] == ['test_000001'] and 'test_000001_1.png' in r['skipped'][0]['reason']
    assert 'skipped 1 sample(s)' in err and 'Traceback' not in err
    code, out, err = cli(*_eval(W, 's4', 'grey', _grey_mask('test_000001'), extra=('--binarize',)))
    assert code == 0, err
    assert json.loads(out)['n'] == 4

def test_bad_training_sample_names_the_file(W, tmp_path):
    "A NaN wav met in training (read lazily, per batch): exit 2, the file named in the last line, no traceback, the folder unlocked."
    root = _damaged(W, 's4', 'trnan', _nan_wav('train_000001'))
    code, out, err = cli(*_train(W, '--dataset', 's4', '--root', root, out=tmp_path/'run'))
    assert code == 2 and 'Traceback' not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith('uspl: error: audio file') and 'train_000001.wav holds non-finite samples' in last and '--skip-bad' in last, err
    assert not (tmp_path/'run'/'.lock').exists()

@pytest.mark.parametrize('how', ['flag', 'flag after the subcommand', 'env'])
def test_debug_shows_the_traceback(W, monkeypatch, how):
    "`uspl --debug ...` (or `uspl CMD ... --debug`) or USPL_DEBUG=1: the input error is raised (its traceback), with a wrapped cause attached."
    argv = ('--debug',) if how == 'flag' else ()
    if how == 'env': monkeypatch.setenv('USPL_DEBUG', '1')
    after = ('--debug',) if how == 'flag after the subcommand' else ()
    with pytest.raises(ValueError, match='test_000001.wav holds non-finite'):
        main([str(a) for a in argv + _eval(W, 's4', 'nan', _nan_wav('test_000001')) + after])
    from uspl.apps.cli import UsageError
    with pytest.raises(UsageError, match='lr must be > 0') as e: main([str(a) for a in argv + _train(W, cfg=W['cfg']('dbg', lr=-1)) + after])
    assert isinstance(e.value.__cause__, ValueError)

def test_a_bug_keeps_its_traceback(monkeypatch):
    "An unexpected exception is not turned into a line: it propagates (its traceback printed by Python)."
    import uspl.apps.cli
    def boom(a): raise RuntimeError('a bug')
    monkeypatch.setattr(uspl.apps.cli, 'cmd_docs', boom)
    with pytest.raises(RuntimeError, match='a bug'): main(['docs', '--out', 'x'])

def test_truncated_checkpoint_on_resume(W, tmp_path):
    run = tmp_path/'run'
    run.mkdir(); (run/'config.json').write_text((W['run']/'config.json').read_text())
    (run/'last.pt').write_bytes((W['run']/'last.pt').read_bytes()[:1000])
    one_line_error(*cli(*_train(W, '--resume', out=run))[::2], 'last.pt')
    assert not (run/'.lock').exists()

def _copy_run(src, dst):
    dst.mkdir()
    for p in src.iterdir(): (dst/p.name).write_bytes(p.read_bytes())
    return dst

def test_resume_takes_the_saved_config(W, tmp_path):
    "No --config on resume: the run's config.json (a tiny model), not the defaults (a size-mismatch before)."
    run = _copy_run(W['run'], tmp_path/'run')
    (run/'.last.pt.x1y2.tmp').write_bytes(b'half a checkpoint')  # a killed write
    code, out, err = cli('train', '--out', run, '--resume', '--no-progress', '--device', 'cpu', '--max-steps', '3')
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])['steps'] == 3
    assert not list(run.glob('.*.tmp')) and not (run/'.lock').exists()
    steps = [json.loads(l)['step'] for l in (run/'log.jsonl').read_text().splitlines() if '"kind"' not in l]
    assert steps == [1, 2, 3]

def test_resume_cuts_the_log_back(W, tmp_path):
    "Steps logged after the last checkpoint (a kill) appear once after the resume."
    run = _copy_run(W['run'], tmp_path/'run')
    with open(run/'log.jsonl', 'a') as f: f.write(json.dumps(dict(epoch=0, step=3, loss=9.0)) + '\n{"epoch": 0, "st')
    code, out, err = cli(*_train(W, '--resume', '--max-steps', '4', out=run))
    assert code == 0, err
    rows = [json.loads(l) for l in (run/'log.jsonl').read_text().splitlines() if '"kind"' not in l]
    assert [r['step'] for r in rows] == [1, 2, 3, 4] and rows[2]['loss'] != 9.0

def test_resume_allows_safe_changes_with_a_notice(W, tmp_path):
    run = _copy_run(W['run'], tmp_path/'run')
    code, out, err = cli(*_train(W, '--resume', '--max-steps', '3', out=run, cfg=W['cfg']('safe', epochs=2, lr=5e-4)))
    assert code == 0, err
    assert 'uspl: notice: resuming' in err and 'epochs 1 -> 2' in err and 'lr' in err
    assert json.loads((run/'config.json').read_text())['train']['epochs'] == 2  # the next resume continues with it

def test_overwrite_starts_over(W, tmp_path):
    run = _copy_run(W['run'], tmp_path/'run')
    code, out, err = cli(*_train(W, '--overwrite', '--max-steps', '1', out=run))
    assert code == 0, err
    assert len((run/'log.jsonl').read_text().splitlines()) == 1

def test_eval_of_an_ezvsl_run(W, tmp_path):
    code, out, err = cli(*_train(W, '--method', 'ezvsl', '--max-steps', '1', out=tmp_path/'ez'))
    assert code == 0, err
    code, out, err = cli('eval', '--run', tmp_path/'ez', '--split', 'test')
    assert code == 0, err
    r = json.loads(out)
    assert r['method'] == 'ezvsl' and r['n'] == 8 and r['skipped'] == []

def _holder(run):
    "A second process that holds the run folder's lock until it is killed."
    code = f"from uspl.engine.runs import RunLock; import time; RunLock({str(run)!r}).acquire(); print('held', flush=True); time.sleep(600)"
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'held'
    return p

def test_second_writer_refuses(W, tmp_path):
    run = _copy_run(W['run'], tmp_path/'run')
    p = _holder(run)
    try:
        code, out, err = cli(*_train(W, '--resume', out=run))
        one_line_error(code, err, f'in use by process {p.pid}')
    finally: p.kill(); p.wait()
    # the holder is gone (kill -9 leaves its lock behind): the next writer takes it over, and says so
    assert (run/'.lock').exists()
    code, out, err = cli(*_train(W, '--resume', '--max-steps', '3', out=run))
    assert code == 0, err
    assert 'stale lock' in err and str(p.pid) in err and not (run/'.lock').exists()

def test_second_writer_refuses_fresh_train(W, tmp_path):
    "A fresh `uspl train` into a folder another process writes (no checkpoint yet): one line, nothing written."
    (tmp_path/'run').mkdir()
    p = _holder(tmp_path/'run')
    try: one_line_error(*cli(*_train(W, out=tmp_path/'run'))[::2], f'in use by process {p.pid}')
    finally: p.kill(); p.wait()
    assert sorted(x.name for x in (tmp_path/'run').iterdir()) == ['.lock']

@pytest.mark.parametrize('cmd', [('demo', '--size', 'tiny', '--seeds', '0', '--methods', 'ezvsl'),
                                 ('compare', '--size', 'tiny', '--seeds', '0', '--methods', 'ezvsl', '--no-progress')])
def test_second_writer_refuses_demo_compare(tmp_path, cmd):
    "`uspl demo` / `uspl compare` into a folder whose run another process writes: one line before anything is trained."
    run = tmp_path/'out'/'runs'/'ezvsl-s0'
    run.mkdir(parents=True)
    p = _holder(run)
    try: one_line_error(*cli(*cmd, '--out', tmp_path/'out')[::2], f'in use by process {p.pid}')
    finally: p.kill(); p.wait()
    assert sorted(x.name for x in run.iterdir()) == ['.lock']

def test_compare_refuses_a_finished_run_of_another_config(W, tmp_path):
    "`uspl compare` again into the same --out with a changed config: one line naming the field, not a silent reuse."
    argv = ('compare', '--seeds', '0', '--methods', 'ezvsl', '--no-progress', '--out', tmp_path/'cmp')
    code, out, err = cli(*argv, '--config', W['tiny'])
    assert code == 0, err
    code, out, err = cli(*argv, '--config', W['cfg']('lr2', lr=5e-4))
    one_line_error(code, err, ('ezvsl-s0 is a finished run of another config', 'lr 0.0001, now 0.0005'))

def test_ctrl_c_is_one_line_exit_130(W, tmp_path):
    "SIGINT to the process group (a terminal's Ctrl-C) mid-training, data-loader workers included."
    cfg = W['cfg']('ctrlc', num_workers=2, ckpt_every=1, epochs=20, synth_train=64)
    run = tmp_path/'run'
    exe = [sys.executable, '-m', 'uspl.apps.cli', 'train', '--out', str(run), '--config', str(cfg), '--no-progress', '--device', 'cpu']
    p = subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS='1'))
    t0 = time.time()
    while not (run/'last.pt').exists() and time.time() - t0 < 120 and p.poll() is None: time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert 'Traceback' not in err, err
    last = err.strip().splitlines()[-1]
    assert 'is intact' in last and '--resume' in last, err
    assert not (run/'.lock').exists() and not list(run.glob('.*.tmp'))
    ck = torch.load(run/'last.pt', map_location='cpu', weights_only=False)
    assert f"global step {ck['global_step']}" in last

def test_ctrl_c_of_parallel_trainings(W, tmp_path):
    "Ctrl-C to `uspl compare --jobs 2` while its workers train: one line, exit 130, every worker gone, no lock or temp file left."
    cfg = W['cfg']('ctrlc_jobs', ckpt_every=2, epochs=20, synth_train=64)
    out = tmp_path/'cmp'
    exe = [sys.executable, '-m', 'uspl.apps.cli', 'compare', '--out', str(out), '--config', str(cfg), '--seeds', '0', '--jobs', '2']
    p = subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS='2'))
    t0 = time.time()
    while not list(out.glob('runs/*/last.pt')) and time.time() - t0 < 120 and p.poll() is None: time.sleep(0.2)
    time.sleep(0.5)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    said = [l for l in err.strip().splitlines() if not l.startswith('progress: ')]  # the progress display's plain lines (not a tty) aside
    assert said == ['uspl: interrupted; run the same command again to continue (finished runs are reused, '
                                        'interrupted ones resume)'], err
    def group_alive():
        try: os.killpg(p.pid, 0); return True
        except ProcessLookupError: return False
    t0 = time.time()
    while group_alive() and time.time() - t0 < 10: time.sleep(0.1)  # multiprocessing's resource tracker ends just after
    assert not group_alive()  # the workers ended with the command
    assert not list(out.glob('runs/*/.lock')) and not list(out.glob('runs/*/.*.tmp'))
    assert not (out/'runs'/'uspl-s0'/'done.json').exists()  # interrupted, to resume on the next call

def test_run_files_honour_the_umask(W):
    "Checkpoints, config and log get 0666 less the umask (mkstemp's 0600 before), so a shared run folder is readable."
    m = os.umask(0); os.umask(m)
    for n in ('last.pt', 'config.json', 'log.jsonl'): assert (W['run']/n).stat().st_mode & 0o777 == 0o666 & ~m, n

def test_vggss_training_never_selects_on_test(W, tmp_path):
    """VGG-SS has no validation split (the dataset registry): `uspl train --dataset vggss` keeps no best.pt and scores no epoch,
    instead of choosing best.pt on the test split (as it did before the registry)."""
    run = tmp_path/'vggss-run'
    code, out, err = cli(*_train(W, '--dataset', 'vggss', '--root', W['vggss'], out=run))
    assert code == 0, err
    assert (run/'last.pt').is_file() and not (run/'best.pt').exists()
    epochs = [json.loads(l) for l in (run/'log.jsonl').read_text().splitlines() if '"kind"' in l]
    assert len(epochs) == 2 and not any({'miou', 'ciou'} & set(e) for e in epochs), epochs
    assert set(json.loads(out.strip().splitlines()[-1])['last']) == {'epoch', 'steps'}  # no validation metrics

def test_set_changes_one_setting(W, tmp_path):
    "`uspl train --size tiny --set ...`: the run's config is the size's with those settings (a method's own group included); exit 0."
    run = tmp_path/'icl'
    code, out, err = cli('train', '--method', 'icl', '--size', 'tiny', '--set', 'icl.rho=0.2', '--set', 'icl.iterations=1', '--set',
                         'train.lr=5e-4', '--set', 'data.synth_train=8', '--out', run, '--no-progress', '--device', 'cpu', '--max-steps', '1')
    assert code == 0, err
    saved = json.loads((run/'config.json').read_text())
    assert saved['method'] == 'icl' and saved['icl']['rho'] == 0.2 and saved['icl']['iterations'] == 1 and saved['train']['lr'] == 5e-4
    assert saved['data']['img_size'] == 64 and saved['data']['synth_train'] == 8  # the tiny size, with the setting over it
    assert 'no --size or --config' not in err

def test_compare_set_reaches_the_config(W, tmp_path):
    "`uspl compare --config F --set train.lr=...`: the setting is the comparison's (a finished run of the file's lr is refused, naming lr)."
    argv = ('compare', '--seeds', '0', '--methods', 'ezvsl', '--no-progress', '--jobs', '1', '--out', tmp_path/'cmp', '--config', W['tiny'])
    code, out, err = cli(*argv)
    assert code == 0, err
    assert json.loads((tmp_path/'cmp'/'results.json').read_text())['config']['train']['lr'] == 1e-4
    one_line_error(*cli(*argv, '--set', 'train.lr=5e-4')[::2], ('ezvsl-s0 is a finished run of another config', 'lr 0.0001, now 0.0005'))

def test_demo_takes_the_config_flags(tmp_path):
    "`uspl demo --size tiny --set ...`: the demo's runs train with the setting; a changed size is not judged against the demo's budget."
    code, out, err = cli('demo', '--size', 'tiny', '--seeds', '0', '--methods', 'ezvsl', '--jobs', '1', '--no-progress',
                         '--set', 'train.lr=5e-4', '--out', tmp_path/'demo')
    assert code == 0, err
    res = json.loads((tmp_path/'demo'/'results.json').read_text())
    assert res['config']['train']['lr'] == 5e-4 and res['config']['data']['img_size'] == 64
    assert json.loads((tmp_path/'demo'/'runs'/'ezvsl-s0'/'config.json').read_text())['train']['lr'] == 5e-4
    assert not res['budget']['judged']

"""The installed `uspl` console script: help, version, the demo's outputs (tiny size), and one-line errors with exit code 2."""
import subprocess, sys, shutil
from pathlib import Path
import pytest
from conftest import ROOT

def uspl(*args, cwd=None):
    exe = Path(sys.executable).parent/'uspl'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'uspl.apps.cli']
    return subprocess.run(cmd + list(args), capture_output=True, text=True, cwd=cwd, timeout=300)

def test_help_lists_subcommands():
    r = uspl('--help')
    assert r.returncode == 0
    for c in ('demo', 'train', 'eval', 'docs'): assert c in r.stdout

def test_version():
    import uspl as pkg
    r = uspl('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'uspl {pkg.__version__}'

@pytest.mark.parametrize('args,needle', [
    (['fly'], "invalid choice: 'fly'"),
    (['train', '--dataset', 'coco', '--out', 'r'], "invalid choice: 'coco'"),
    (['train', '--out', 'r', '--max-steps', 'ten'], "invalid int value: 'ten'"),
    (['train', '--dataset', 's4', '--root', '/no/such/root', '--out', 'r'], 'dataset root not found: /no/such/root'),
    (['train', '--out', 'r', '--config', '/no/such/cfg.json'], '/no/such/cfg.json'),
    (['eval', '--run', '/no/such/run'], 'run folder not found: /no/such/run'),
])
def test_bad_input_one_line_exit_2(args, needle, tmp_path):
    r = uspl(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and lines[0].startswith('uspl'), r.stderr

def test_run_without_checkpoint(tmp_path):
    r = uspl('eval', '--run', str(tmp_path))
    assert r.returncode == 2 and 'not a run folder' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_unreadable_config(tmp_path):
    (tmp_path/'c.json').write_text('{"tau": ')
    r = uspl('train', '--out', str(tmp_path/'run'), '--config', str(tmp_path/'c.json'))
    assert r.returncode == 2 and 'c.json' in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_demo_tiny_writes_its_outputs(tmp_path):
    "The main job end to end at the smoke size over 2 seeds: rows per method, path and seed, metrics as fractions, tables printed."
    import json
    r = uspl('demo', '--size', 'tiny', '--seeds', '0,1', '--out', str(tmp_path/'out'))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'out'/'results.json').read_text())
    learned = {(x['method'], x['path'], x['seed']) for x in res['rows'] if x['seed'] is not None}
    assert learned == {(m, p, s) for s in (0, 1) for m, p in [('ezvsl', 'coarse'), ('uspl', 'coarse'), ('uspl', 'smr'), ('uspl', 'sps')]}
    assert {x['method'] for x in res['rows'] if x['seed'] is None} == {'center-prior', 'all-ones', 'all-objects'}
    assert all(0 <= x[k] <= 1 for x in res['rows'] for k in ('miou', 'fscore', 'ciou', 'auc'))
    assert {c['name'] for c in res['claims']} == {'SPS - EZ-VSL', 'SMR - coarse', 'SPS - SMR'}
    assert res['goals'] and 0 < res['setting']['mask_area'] < 1
    md = (tmp_path/'out'/'results.md').read_text()
    assert '| method | path | seeds | mIoU | F-score | cIoU | AUC |' in md and 'Quality goals:' in md and 'Only 2 seed(s)' in md
    assert md.strip() in r.stdout
    for f in ('figure.png', 'results.png', 'pairs.png'): assert (tmp_path/'out'/f).stat().st_size > 0
    assert 'progress: 16/16 steps (100%)' in r.stderr, r.stderr[-3000:]  # the one progress display (2 seeds x 2 methods x 4 steps)

def test_compare_jobs_progress_lines(tmp_path):
    "`uspl compare --jobs 2` not on a terminal: plain progress lines with the steps' total and, once steps were timed, an estimate."
    r = uspl('compare', '--size', 'tiny', '--methods', 'ezvsl,uspl', '--seeds', '0,1', '--jobs', '2', '--out', str(tmp_path/'c'))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith('progress: ')]
    assert '\r' not in r.stderr and lines[0].startswith('progress: 0/16 steps (0%)') and lines[-1].startswith('progress: 16/16 steps (100%)'), lines
    assert any(' | left ~' in l for l in lines) and all(' | elapsed ' in l for l in lines), lines
    assert 'uspl-s0: started in a worker process' in r.stdout and 'uspl-s0: finished in' in r.stdout, r.stdout[-3000:]

def test_data_stamps_pairs(tmp_path):
    "`uspl data stamps --pairs N` on a tiny fake stamp folder: the ordinary scenes, N pair images listed twice, pairs.json; bad N exits 2."
    import json
    pytest.importorskip('skimage')  # its photos are the default backgrounds
    from uspl.data.stamps import write_fake_stamps, read_pairs
    src = write_fake_stamps(tmp_path/'stamps', n=4)
    r = uspl('data', 'stamps', '--src', str(src), '--out', str(tmp_path/'d'), '--n-train', '2', '--n-val', '0', '--n-test', '2', '--pairs', '2')
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s['counts'] == dict(train=2, val=0, test=2) and s['pairs']['images'] == 2 and s['pairs']['scenes'] == 4
    info = read_pairs(tmp_path/'d')
    assert [e['samples'] for e in info['pairs']] == [[f'pair_{j:06d}_a', f'pair_{j:06d}_b'] for j in range(2)]
    assert len((info['root']/'s4_meta_data.csv').read_text().splitlines()) == 1 + 4
    for args, needle in ((['--pairs', '-1'], 'pairs: must be an integer >= 0'), (['--pairs', 'two'], "invalid int value: 'two'"),
                         (['--pairs', '2', '--split', 'unseen-photos'], 'pairs: the test split sounds 1 class')):
        r = uspl('data', 'stamps', '--src', str(src), '--out', str(tmp_path/'bad'), '--n-train', '0', '--n-val', '0', '--n-test', '1', *args)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr

def test_data_stamps_per_class_default(tmp_path):
    "Without --n-train the builder writes --per-class scenes per sounding class; the help's defaults are `build_stamps`'s own."
    import inspect, json, re
    pytest.importorskip('skimage')
    from uspl.apps.cli import build_parser
    from uspl.data.stamps import build_stamps, write_fake_stamps
    sig = inspect.signature(build_stamps).parameters
    sub = next(a for a in build_parser()._actions if a.dest == 'cmd').choices['data']
    stamps = next(a for a in sub._actions if a.dest == 'what').choices['stamps']
    helps = {a.dest: a.help for a in stamps._actions}
    for k in ('per_class', 'n_val', 'n_test'):
        assert re.search(rf'\(default: {sig[k].default}\)', helps[k]), (k, helps[k])
    assert sig['n_train'].default is None
    src = write_fake_stamps(tmp_path/'stamps', n=4)
    r = uspl('data', 'stamps', '--src', str(src), '--out', str(tmp_path/'d'), '--per-class', '3', '--n-val', '0', '--n-test', '1')
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads(r.stdout)
    assert s['counts']['train'] == 3 * s['splits']['train']['sounding_classes'] and s['splits']['train']['sounding_classes'] >= 2
    r = uspl('data', 'stamps', '--src', str(src), '--out', str(tmp_path/'e'), '--per-class', '-1', '--n-test', '1')
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and 'per_class: must be an integer >= 0' in lines[0], r.stderr

def _readme_commands():
    "Every command line of README.md's code blocks that runs `uspl` (or `-m uspl.apps.cli`), without its comment: the arguments after the program."
    import shlex
    lines, fence = [], None
    for l in (ROOT/'README.md').read_text().splitlines():
        if l.startswith('```'): fence = None if fence is not None else l[3:].strip()
        elif fence in ('sh', 'bash', 'shell', ''): lines.append(l)
    cmds = []
    for l in lines:
        words = shlex.split(l, comments=True)
        if words[:1] == ['uspl']: cmds.append(words[1:])
        elif 'uspl.apps.cli' in words: cmds.append(words[words.index('uspl.apps.cli') + 1:])
    return cmds

def test_readme_commands_parse():
    "Every `uspl ...` line of the README parses as written (flags, choices, values), checked by the real parser."
    from uspl.apps.cli import build_parser
    cmds = _readme_commands()
    assert len(cmds) >= 8 and {c[0] for c in cmds} >= {'demo', 'train', 'eval', 'compare', 'localize', 'data'}, cmds
    p = build_parser()
    for c in cmds: p.parse_args(c)  # an unknown flag or a bad value raises UsageError naming it

def _help(*argv):
    "`uspl ARGV --help` in this process: (exit code, stdout)."
    import contextlib, io
    from uspl.apps.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        try: code = main([*argv, '--help'])
        except SystemExit as e: code = e.code
    return code, out.getvalue()

def test_readme_commands_help():
    "Each README command runs as written up to its help: `uspl` accepts its words with --help (exit 0, the subcommand's usage)."
    for c in _readme_commands():
        code, out = _help(*c)
        assert code == 0 and out.startswith(f'usage: uspl {c[0]}'), (c, out)

def test_help_examples_parse_and_defaults_said_once():
    "Each subcommand's help: its examples one a line, each of them parses; no default said twice, none shown as None."
    import re, shlex
    from uspl.apps.cli import build_parser
    p = build_parser()
    for cmd in (['demo'], ['train'], ['eval'], ['compare'], ['localize'], ['data', 'stamps'], ['docs']):
        code, out = _help(*cmd)
        assert code == 0, out
        assert '(default: None)' not in out
        assert all(b.count('default') <= 1 for b in re.split(r'\n  (?=-)', out)), out
        ex = out.split('examples:\n', 1)[1].splitlines()
        assert ex and all(l.startswith('  uspl ' + ' '.join(cmd)) for l in ex), out
        for l in ex: p.parse_args(shlex.split(l)[1:])

def test_shared_flags_mean_the_same():
    "--size/--config/--set, --jobs, --device, --no-progress: the same flag on every subcommand that takes it, one default for --jobs."
    from uspl.apps.cli import build_parser, JOBS
    p = build_parser()
    demo, comp = p.parse_args(['demo']), p.parse_args(['compare', '--out', 'x'])
    assert demo.jobs == comp.jobs == JOBS and (demo.size, comp.size) == ('demo', 'cpu')
    for argv in (['demo'], ['compare', '--out', 'x'], ['train', '--out', 'x']):
        a = p.parse_args(argv + ['--config', 'c.json', '--set', 'train.lr=1e-3', '--set', 'icl.rho=0.2', '--no-progress'])
        assert a.config == 'c.json' and a.settings == [('train', 'lr', 1e-3), ('icl', 'rho', 0.2)] and a.no_progress
        assert p.parse_args(argv + ['--size', 'tiny']).size == 'tiny'
    for argv in (['train', '--out', 'x'], ['eval', '--run', 'r'], ['demo'], ['compare', '--out', 'x']):
        assert p.parse_args(argv + ['--device', 'cpu']).device == 'cpu' and p.parse_args(argv + ['--device', 'cuda']).device == 'cuda'
        assert p.parse_args(argv).device is None  # train/eval: cuda when available; demo/compare: cpu (`run_compare`'s default)

@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='a CUDA device is present')
@pytest.mark.parametrize('argv', [['demo', '--size', 'tiny'], ['compare', '--size', 'tiny'], ['train', '--size', 'tiny'], ['eval', '--run', '.']])
def test_device_cuda_without_gpu_one_line(argv, tmp_path):
    "`--device cuda` on a machine without CUDA: one line, exit 2, before anything is built or written (the four commands alike)."
    r = uspl(*argv, '--out', str(tmp_path/'o'), '--device', 'cuda', cwd=tmp_path) if argv[0] != 'eval' else uspl(*argv, '--device', 'cuda', cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip() == 'uspl: error: --device cuda: no CUDA device', r.stderr
    assert not (tmp_path/'o').exists()

def test_compare_device_cpu(tmp_path):
    "`uspl compare --device cpu` with `--jobs 2`: the worker trains and scores on the device given, recorded in results.json."
    import json
    r = uspl('compare', '--size', 'tiny', '--methods', 'ezvsl', '--seeds', '0,1', '--jobs', '2', '--device', 'cpu', '--no-progress',
             '--out', str(tmp_path/'c'))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path/'c'/'results.json').read_text())
    assert res['setting']['device'] == 'cpu' and {(x['method'], x['seed']) for x in res['rows'] if x['seed'] is not None} == {('ezvsl', 0), ('ezvsl', 1)}

@pytest.mark.parametrize('cmd', ['compare', 'demo'])
def test_duplicate_seeds_refused(cmd, tmp_path):
    "A seed listed twice would train and report one run twice as if two: refused in one line, exit 2, nothing written."
    r = uspl(cmd, '--out', str(tmp_path/'o'), '--size', 'tiny', '--seeds', '0,0')
    assert r.returncode == 2 and r.stderr.strip() == 'uspl: error: --seeds: seed 0 is listed twice', r.stderr
    assert not (tmp_path/'o').exists()

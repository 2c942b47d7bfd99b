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

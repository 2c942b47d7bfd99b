"""End-to-end training through the CLI on tiny configs: exact resume, torchrun with 2 CPU processes equal to one
process with the same global batch, evaluation output, and a NaN stop."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import ROOT

TINY = dict(img_size=64, visual_backbone='resnet18', audio_encoder='vggish_small', embed_dim=32, aff_dim=32, fpn_dim=32,
            batch_size=4, synth_train=16, synth_val=8, synth_test=8, warmup_epochs=1, epochs=1, num_workers=0,
            radius=3, pamr_iters=3, lr=1e-3, eval_path='sps')

def cli(*args, env=None, cwd=None, torchrun=0):
    e = dict(os.environ, OMP_NUM_THREADS='1', **(env or {}))
    pre = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={torchrun}'] if torchrun else [sys.executable]
    r = subprocess.run(pre + ['-m', 'uspl.apps.cli'] + list(args), capture_output=True, text=True, env=e, cwd=cwd, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-5000:]
    return r

def config(tmp, **kw):
    p = tmp/f'cfg{len(kw)}.json'; p.write_text(json.dumps({**TINY, **kw})); return str(p)

def step_losses(run):
    return [json.loads(l) for l in (Path(run)/'log.jsonl').read_text().splitlines() if '"kind"' not in l]

def weights(run):
    return torch.load(Path(run)/'last.pt', map_location='cpu', weights_only=False)['model']

def test_resume_is_exact(tmp_path):
    cfg = config(tmp_path)
    cli('train', '--out', str(tmp_path/'full'), '--config', cfg, '--no-progress', '--device', 'cpu')
    cli('train', '--out', str(tmp_path/'part'), '--config', cfg, '--no-progress', '--device', 'cpu', '--max-steps', '5')
    cli('train', '--out', str(tmp_path/'part'), '--config', cfg, '--no-progress', '--device', 'cpu', '--resume')
    a, b = weights(tmp_path/'full'), weights(tmp_path/'part')
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    ra = json.loads(cli('eval', '--run', str(tmp_path/'full'), '--split', 'test', '--path', 'smr').stdout)
    assert ra['n'] == 8 and set(ra) >= {'miou', 'fscore', 'ciou', 'auc', 'n'}
    assert all(0 <= ra[k] <= 1 for k in ('miou', 'fscore', 'ciou', 'auc'))
    # a run whose initial-weights file is not on this machine (trained elsewhere) still evaluates, to the same numbers
    name = ra['checkpoint'].replace('\\', '/').rsplit('/', 1)[-1]  # the file eval chose (best.pt)
    ck = torch.load(tmp_path/'full'/name, map_location='cpu', weights_only=False)
    ck['cfg'] = {**ck['cfg'], 'visual_weights': str(tmp_path/'gone'/'imagenet.pth')}
    (tmp_path/'moved').mkdir(); torch.save(ck, tmp_path/'moved'/name)
    (tmp_path/'moved'/'config.json').write_text((tmp_path/'full'/'config.json').read_text())
    rb = json.loads(cli('eval', '--run', str(tmp_path/'moved'), '--split', 'test', '--path', 'smr').stdout)
    assert {k: rb[k] for k in ('miou', 'n')} == {k: ra[k] for k in ('miou', 'n')}

def test_two_processes_match_one(tmp_path):
    cfg = config(tmp_path, freeze_bn='all', optimizer='sgd', lr=0.05)
    cli('train', '--out', str(tmp_path/'one'), '--config', cfg, '--no-progress', '--device', 'cpu', '--max-steps', '6')
    cli('train', '--out', str(tmp_path/'two'), '--config', cfg, '--no-progress', '--device', 'cpu', '--max-steps', '6', torchrun=2)
    one, two = step_losses(tmp_path/'one'), step_losses(tmp_path/'two')
    assert len(one) == len(two) == 6
    for a, b in zip(one, two):
        for k in a:
            if k in ('epoch', 'step'): assert a[k] == b[k]
            else: assert abs(a[k] - b[k]) <= 1e-4 * max(1, abs(a[k])), (a['step'], k, a[k], b[k])

@pytest.mark.parametrize('method', ['ezvsl', 'lvs', 'uspl'])
def test_every_method_trains_and_evaluates(tmp_path, method):
    "`uspl train --method M` records M in the run folder; `uspl eval --run` rebuilds it and scores each of its paths."
    from uspl.methods.base import get_method
    cfg = config(tmp_path)
    run = tmp_path/method
    out = json.loads(cli('train', '--method', method, '--out', str(run), '--config', cfg, '--no-progress', '--device', 'cpu',
                         '--max-steps', '3').stdout.strip().splitlines()[-1])
    assert out['method'] == method and out['steps'] == 3
    assert json.loads((run/'config.json').read_text())['method'] == method
    for path in get_method(method).paths:
        r = json.loads(cli('eval', '--run', str(run), '--split', 'test', '--path', path).stdout)
        assert r['method'] == method and r['path'] == path and r['n'] == 8 and 0 <= r['miou'] <= 1

def test_localize_own_media(tmp_path):
    "`uspl localize` on a trained run: a photo and a sound give one overlay at the photo's size; bad input is one line, exit 2."
    import numpy as np, soundfile as sf
    from PIL import Image
    run = tmp_path/'run'
    cli('train', '--method', 'uspl', '--out', str(run), '--config', config(tmp_path), '--no-progress', '--device', 'cpu', '--max-steps', '2')
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path/'photo.png')
    sf.write(tmp_path/'sound.wav', (0.3 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.float32), 16000)
    out = json.loads(cli('localize', '--run', str(run), '--image', str(tmp_path/'photo.png'), '--audio', str(tmp_path/'sound.wav'),
                         '--out', str(tmp_path/'loc'), '--path', 'smr').stdout.strip().splitlines()[-1])
    assert out['frames'] == 1 and len(out['files']) == 1
    ov = Image.open(out['files'][0])
    assert ov.size == (120, 90) and ov.mode == 'RGB'
    assert not np.array_equal(np.asarray(ov), np.asarray(Image.open(tmp_path/'photo.png')))  # the map is drawn over the photo
    sf.write(tmp_path/'silent.wav', np.zeros(16000, np.float32), 16000)
    bad = [(['--image', str(tmp_path/'photo.png')], '--audio is missing'),
           (['--image', str(tmp_path/'photo.png'), '--audio', str(tmp_path/'nope.wav')], 'nope.wav: file not found'),
           (['--image', str(tmp_path/'photo.png'), '--audio', str(tmp_path/'silent.wav')], 'silent.wav: the sound is silent'),
           (['--image', str(tmp_path/'photo.png'), '--audio', str(tmp_path/'sound.wav'), '--checkpoint', 'nope.pt'], 'no checkpoint nope.pt'),
           (['--image', str(tmp_path/'photo.png'), '--audio', str(tmp_path/'sound.wav'), '--path', 'fly'], "invalid choice: 'fly'")]
    for args, needle in bad:
        r = subprocess.run([sys.executable, '-m', 'uspl.apps.cli', 'localize', '--run', str(run), '--out', str(tmp_path/'bad'), *args],
                           capture_output=True, text=True, timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0] and lines[0].startswith('uspl'), (args, r.stderr)

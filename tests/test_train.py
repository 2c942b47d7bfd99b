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

# ---- preemption: SIGTERM / SIGUSR1 stop a training after its step with last.pt written, exit 75; --resume is exact
import signal, time
PREEMPTED = 75  # uspl.engine.train.PREEMPTED_EXIT, the status the README documents
LONG = dict(synth_train=24)  # 6 steps an epoch, 12 in all: time for a signal to land mid-epoch

def start_train(run, cfg, *extra):
    e = dict(os.environ, OMP_NUM_THREADS='1')
    return subprocess.Popen([sys.executable, '-m', 'uspl.apps.cli', 'train', '--out', str(run), '--config', cfg, '--no-progress',
                             '--device', 'cpu', *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)

def wait_until(done, p, timeout=300):
    "Poll `done()` while the training `p` runs; fail if it ends first."
    t0 = time.time()
    while not done():
        if p.poll() is not None: raise AssertionError('the training ended before it was signalled: ' + p.stderr.read()[-3000:])
        assert time.time() - t0 < timeout, 'no step logged in time'
        time.sleep(0.02)

def n_logged(run):
    try: return len(step_losses(run))
    except (FileNotFoundError, json.JSONDecodeError): return 0

@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    "The weights an uninterrupted training of the LONG config ends with, and that config."
    d = tmp_path_factory.mktemp('ref'); cfg = config(d, **LONG)
    cli('train', '--out', str(d/'run'), '--config', cfg, '--no-progress', '--device', 'cpu')
    assert n_logged(d/'run') == 12
    return weights(d/'run'), cfg

def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k

@pytest.mark.parametrize('sig', ['SIGTERM', 'SIGUSR1'])
def test_stop_signal_then_resume_is_exact(tmp_path, uninterrupted, sig):
    "A training signalled after its first logged step finishes that step, writes last.pt there, exits 75; --resume ends bit-exact."
    ref, cfg = uninterrupted
    run = tmp_path/'run'
    p = start_train(run, cfg)
    wait_until(lambda: n_logged(run) >= 1, p)
    p.send_signal(getattr(signal, sig))
    _, err = p.communicate(timeout=300)
    assert p.returncode == PREEMPTED, err[-3000:]
    assert f'{sig}: stopped after global step' in err and '--resume' in err, err[-2000:]
    ck = torch.load(run/'last.pt', map_location='cpu', weights_only=False)
    assert 1 <= ck['global_step'] < 12 and ck['global_step'] == n_logged(run)  # the checkpoint is at the last step done
    assert not (run/'.lock').exists()
    cli('train', '--out', str(run), '--no-progress', '--device', 'cpu', '--resume')
    assert [r['step'] for r in step_losses(run)] == list(range(1, 13))
    assert_same(ref, weights(run))

def test_ckpt_every_resume_mid_epoch(tmp_path, uninterrupted):
    "--ckpt-every 3: a training killed outright (SIGKILL) after step 4 resumes from the mid-epoch checkpoint, bit-exact."
    ref, cfg = uninterrupted
    run = tmp_path/'run'
    p = start_train(run, cfg, '--ckpt-every', '3')
    wait_until(lambda: n_logged(run) >= 4, p)
    p.kill(); p.communicate(timeout=60)
    ck = torch.load(run/'last.pt', map_location='cpu', weights_only=False)
    assert ck['global_step'] % 3 == 0 and ck['step_in_epoch'] > 0, (ck['global_step'], ck['step_in_epoch'])  # mid-epoch
    cli('train', '--out', str(run), '--no-progress', '--device', 'cpu', '--resume')
    assert_same(ref, weights(run))

def test_stop_signal_to_a_parallel_compare(tmp_path):
    """SIGTERM to `uspl compare --jobs 2` itself (not its workers): it passes the signal on, each running training finishes its
    step and writes last.pt there, the command exits 75 with every worker gone; the same command again resumes them and ends."""
    cfg, out = config(tmp_path, **LONG), tmp_path/'cmp'
    exe = [sys.executable, '-m', 'uspl.apps.cli', 'compare', '--out', str(out), '--config', cfg, '--seeds', '0', '--jobs', '2',
           '--methods', 'ezvsl,uspl']
    p = subprocess.Popen(exe, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                         env=dict(os.environ, OMP_NUM_THREADS='2'))
    runs = [out/'runs'/'ezvsl-s0', out/'runs'/'uspl-s0']
    wait_until(lambda: all(n_logged(r) >= 1 for r in runs), p)
    p.send_signal(signal.SIGTERM)  # the parent only
    said, err = p.communicate(timeout=300)
    assert p.returncode == PREEMPTED, err[-3000:]
    assert 'SIGTERM: every running training stops after its current step' in said, said[-3000:]
    assert err.strip().splitlines()[-1].startswith('uspl: SIGTERM: stopped after global step'), err[-3000:]
    t0 = time.time()
    while time.time() - t0 < 10:
        try: os.killpg(p.pid, 0); time.sleep(0.1)
        except ProcessLookupError: break
    else: raise AssertionError('a worker outlived the command')
    for r in runs:
        ck = torch.load(r/'last.pt', map_location='cpu', weights_only=False)
        assert 1 <= ck['global_step'] < 12 and ck['global_step'] == n_logged(r), (r.name, ck['global_step'], n_logged(r))
        assert not (r/'.lock').exists() and not (r/'done.json').exists()
    r = subprocess.run(exe, capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS='2'))
    assert r.returncode == 0, r.stderr[-3000:]
    for run in runs: assert [s['step'] for s in step_losses(run)] == list(range(1, 13)), run.name  # resumed, no step twice

def test_amp_trains(tmp_path):
    "--amp bf16 and fp16 on the CPU: two USPL steps with the overall loss (SMR's walk in float32): finite losses, float32 weights that moved."
    from uspl.apps.cli import load_config
    from uspl.methods.base import build_method
    from uspl.core import seed_everything
    cfg = config(tmp_path, warmup_epochs=0)  # the overall loss (Eq. 11) from the first step: SMR and SPS train too
    seed_everything(0); w0 = build_method(load_config(cfg)).state_dict()  # the initial weights `uspl train` starts from
    for amp, n in (('bf16', 2), ('fp16', 4)):  # fp16: the scaler skips the first steps (their gradients overflow at 2**16)
        run = tmp_path/amp
        cli('train', '--out', str(run), '--config', cfg, '--no-progress', '--device', 'cpu', '--max-steps', str(n), '--amp', amp)
        losses = step_losses(run)
        assert len(losses) == n and all(torch.isfinite(torch.tensor(v)) for r in losses for k, v in r.items() if k not in ('epoch', 'step'))
        w = weights(run)
        assert all(w[k].dtype == w0[k].dtype for k in w)  # parameters stay float32
        moved = [k for k in w if w[k].is_floating_point() and not torch.equal(w[k], w0[k])]
        assert any('pmv_aff' in k for k in moved) and any(k.startswith('visual') or '.visual' in k for k in moved), moved[:20]
        assert json.loads((run/'config.json').read_text())['train']['amp'] == amp
        scaler = torch.load(run/'last.pt', map_location='cpu', weights_only=False)['scaler']
        assert (scaler['scale'] <= 2.**16) if amp == 'fp16' else scaler == {}  # fp16's scaler state is in the checkpoint

def test_stop_signal_under_torchrun(tmp_path):
    "torchrun, 2 CPU processes: SIGTERM to rank 1 alone stops both after the same step (the flag's all-reduce), last.pt at that step, exit 75."
    cfg = config(tmp_path, **LONG, freeze_bn='all')
    run = tmp_path/'run'
    e = dict(os.environ, OMP_NUM_THREADS='1')
    p = subprocess.Popen([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', '-m', 'uspl.apps.cli',
                          'train', '--out', str(run), '--config', cfg, '--no-progress', '--device', 'cpu'],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=e)
    wait_until(lambda: n_logged(run) >= 1, p)
    def ppid(pid):
        try: return int(Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[1])
        except (OSError, IndexError, ValueError): return None
    def rank(pid):
        try: env = dict(kv.split('=', 1) for kv in Path(f'/proc/{pid}/environ').read_text().split('\0') if '=' in kv)
        except OSError: return None
        return env.get('RANK')
    workers = [int(q.name) for q in Path('/proc').iterdir() if q.name.isdigit() and ppid(int(q.name)) == p.pid]
    one = [w for w in workers if rank(w) == '1']
    assert len(one) == 1, workers
    os.kill(one[0], signal.SIGTERM)
    _, err = p.communicate(timeout=300)
    assert p.returncode != 0 and f'exitcode  : {PREEMPTED}' in err, err[-3000:]  # torchrun's report of its failed workers
    assert 'a stop signal to another process: stopped after global step' in err, err[-3000:]  # rank 0 stopped by agreement
    ck = torch.load(run/'last.pt', map_location='cpu', weights_only=False)
    assert 1 <= ck['global_step'] < 12 and ck['global_step'] == n_logged(run)

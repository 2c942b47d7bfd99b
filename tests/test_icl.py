"""ICL (uspl.methods.icl) end to end at the tiny size: iteration 0 is EZ-VSL, exact resume inside and across iterations,
checkpoints per iteration for `load_run` and `uspl eval --iteration`, and the CLI."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import pytest
import torch
from conftest import ROOT

TINY_ICL = dict(iterations=2, iter_epochs=1, clusters=2)  # iteration 0: 2 epochs of 2 steps; iteration 1: 1 epoch of 2 steps

@pytest.fixture(scope='module')
def one_thread():
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def setup(one_thread):
    from uspl.evaluation.compare import size_config, compare_splits
    cfg = size_config('tiny').update(method='icl', **TINY_ICL)
    return cfg, compare_splits('synthetic', None, cfg)

def train(cfg, splits, out, method='icl', **kw):
    from uspl.core import seed_everything
    from uspl.methods.base import build_method
    from uspl.engine.train import DistEnv, train_method
    seed_everything(cfg.seed); m = build_method(cfg, method)
    return train_method(m, splits['train'], out, progress=False, env=DistEnv(), **kw)

def weights(path): return torch.load(path, map_location='cpu', weights_only=False)['model']

def assert_same(a, b):
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k

@pytest.fixture(scope='module')
def full(setup, tmp_path_factory):
    cfg, splits = setup
    out = tmp_path_factory.mktemp('icl')/'full'
    return out, train(cfg, splits, out)

def test_run_folder(full, setup):
    from uspl.engine.runs import run_method, can_resume
    from uspl.methods.icl import PseudoLabels
    out, st = full
    cfg, splits = setup
    assert run_method(out) == 'icl'
    assert (st['global_step'], st['epoch'], st['iterations']) == (6, 3, 2)
    assert [r['iteration'] for r in st['history']] == [0, 0, 1]
    for k in (0, 1): assert (out/f'iter-{k}'/'last.pt').is_file() and (out/f'iter-{k}'/'done.json').is_file()
    assert not (out/'iter-0'/'pseudo.pt').exists()
    p = PseudoLabels.load(out/'iter-1'/'pseudo.pt', len(splits['train']))
    assert p.region.dtype == torch.bool and p.region.shape[0] == 16 and set(p.cluster.tolist()) <= {0, 1}
    assert (p.region.flatten(1).sum(1) == round(cfg.rho * p.region[0].numel())).all()
    ck = json.loads((out/'iter-1'/'config.json').read_text())
    assert (ck['method'], ck['train']['warmup_epochs'], ck['train']['epochs'], ck['train']['seed']) == ('icl', 0, 1, cfg.seed + 1)
    # the terms of iteration 1 were trained and logged
    steps = [json.loads(l) for l in (out/'iter-1'/'log.jsonl').read_text().splitlines() if '"kind"' not in l]
    assert len(steps) == 2 and all({'intra', 'inter', 'mmicl'} <= set(s) for s in steps)
    assert can_resume(out, 'icl') and not can_resume(out/'nothing', 'icl')
    assert set(ck) == {'method', 'data', 'encoders', 'mmicl', 'train', 'icl'}  # only ICL's groups

def test_iteration_0_is_ezvsl(full, setup, tmp_path):
    "ICL's iteration 0 is EZ-VSL's training: the same weights, bit for bit."
    cfg, splits = setup
    train(cfg.update(method='ezvsl'), splits, tmp_path/'ez', method='ezvsl')
    assert_same(weights(full[0]/'iter-0'/'last.pt'), weights(tmp_path/'ez'/'last.pt'))

@pytest.mark.parametrize('stop', [5, 4, 1])  # inside iteration 1, at the iteration boundary, inside iteration 0
def test_resume_across_iterations(full, setup, tmp_path, stop):
    from uspl.engine.runs import can_resume
    cfg, splits = setup
    part = tmp_path/'part'
    st = train(cfg, splits, part, max_steps=stop)
    assert st['global_step'] == stop and can_resume(part, 'icl')
    assert (part/'iter-0'/'done.json').is_file() == (stop > 4)  # at step 4 iteration 0's last epoch is not closed yet
    st = train(cfg, splits, part, resume=True)
    assert (st['global_step'], st['epoch']) == (6, 3)
    for k in (0, 1): assert_same(weights(full[0]/f'iter-{k}'/'last.pt'), weights(part/f'iter-{k}'/'last.pt'))
    assert_same(torch.load(full[0]/'iter-1'/'pseudo.pt'), torch.load(part/'iter-1'/'pseudo.pt'))

def test_resume_recomputes_missing_pseudo_labels(full, setup, tmp_path):
    cfg, splits = setup
    part = tmp_path/'part'
    train(cfg, splits, part, max_steps=5)  # killed inside iteration 1
    (part/'iter-1'/'pseudo.pt').unlink()
    train(cfg, splits, part, resume=True)  # recomputed from iteration 0's last weights
    assert_same(torch.load(full[0]/'iter-1'/'pseudo.pt'), torch.load(part/'iter-1'/'pseudo.pt'))
    assert_same(weights(full[0]/'iter-1'/'last.pt'), weights(part/'iter-1'/'last.pt'))
    # a finished run resumed again trains nothing and keeps its weights
    before = weights(part/'iter-1'/'last.pt')
    st = train(cfg, splits, part, resume=True)
    assert (st['global_step'], st['iterations']) == (6, 2)
    assert_same(before, weights(part/'iter-1'/'last.pt'))

def test_load_run_and_checkpoints(full, tmp_path):
    from uspl.engine.runs import load_run, find_checkpoint
    out = full[0]
    m, ck = load_run(out)
    assert ck == out/'iter-1'/'last.pt' and m.name == 'icl' and m.pseudo is None and not m.training
    m0, ck0 = load_run(out, iteration=0)
    assert ck0 == out/'iter-0'/'last.pt'
    assert_same(m0.state_dict(), weights(ck0))
    assert not all(torch.equal(a, b) for a, b in zip(m0.state_dict().values(), m.state_dict().values()))
    with pytest.raises(FileNotFoundError, match='iteration 5'): find_checkpoint(out, iteration=5)
    with pytest.raises(ValueError, match='iteration must be an integer >= 0'): find_checkpoint(out, iteration=-1)
    shutil.copy(out/'config.json', tmp_path/'config.json')
    with pytest.raises(FileNotFoundError, match='no iteration has begun'): find_checkpoint(tmp_path)
    # a run killed inside iteration 1: the last finished iteration is 0
    shutil.copytree(out, tmp_path/'killed'); (tmp_path/'killed'/'iter-1'/'done.json').unlink()
    assert find_checkpoint(tmp_path/'killed') == tmp_path/'killed'/'iter-0'/'last.pt'

def cli(*args):
    e = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run([sys.executable, '-m', 'uspl.apps.cli'] + list(args), capture_output=True, text=True, env=e, timeout=900)
    return r

def test_cli_train_eval(tmp_path):
    from uspl.evaluation.compare import SIZES
    cfg = tmp_path/'tiny.json'; cfg.write_text(json.dumps({**SIZES['tiny'], **TINY_ICL}))
    run = tmp_path/'run'
    r = cli('train', '--method', 'icl', '--config', str(cfg), '--out', str(run), '--device', 'cpu', '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (out['method'], out['steps'], out['epochs']) == ('icl', 6, 3)
    assert out['last']['iteration'] == 1 and 0 <= out['last']['miou'] <= 1  # validated on the coarse path
    assert (run/'iter-1'/'best.pt').is_file()
    r0 = cli('eval', '--run', str(run), '--iteration', '0')
    assert r0.returncode == 0, r0.stderr[-3000:]
    e0 = json.loads(r0.stdout)
    assert e0['method'] == 'icl' and e0['path'] == 'coarse' and 'iter-0' in e0['checkpoint'] and 0 <= e0['miou'] <= 1
    e1 = json.loads(cli('eval', '--run', str(run)).stdout)
    assert 'iter-1' in e1['checkpoint'] and e1['checkpoint'].endswith('best.pt')
    bad = cli('eval', '--run', str(run), '--iteration', '7')
    assert bad.returncode == 2 and 'iteration 7' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1

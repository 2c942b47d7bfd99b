"""The benchmark scripts run (smoke sizes) and print their goal lines: a change that breaks a script fails here, not on the
day someone measures. Their numbers at these sizes mean nothing; the measured figures are in nbs/results/bench/."""
import contextlib, importlib.util, io, re, sys
from pathlib import Path
import pytest, torch

BENCH = Path(__file__).resolve().parents[1]/'benchmarks'

def run(name, argv):
    "Import benchmarks/NAME.py and run its main(argv); (its return value, what it printed)."
    spec = importlib.util.spec_from_file_location(name, BENCH/f'{name}.py')
    mod = importlib.util.module_from_spec(spec); spec.loader.exec_module(mod)
    threads, out = torch.get_num_threads(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out): res = mod.main(argv)
    finally: torch.set_num_threads(threads)
    return res, out.getvalue()

def test_bench_train_step_prints_the_step_its_parts_and_the_goal():
    res, out = run('bench_train_step', ['--size', 'tiny', '--batch', '2', '--reps', '1', '--threads', '1'])
    for part in ('encoders + projectors forward', 'random walk (Eqs. 7-8)', 'SPS forward + loss', 'optimiser step',
                 'whole step, default allocator', 'whole step, tune_allocator', 'floor: warm-up step'):
        assert part in out, part
    assert 'step / backbone = ' in out and ('(goal <= 2.0: met' in out or '(goal <= 2.0: MISSED' in out)
    assert res['ratio'] > 0 and res['floor'] > 0 and len(res['parts_ms']) == 8

def test_bench_efficiency_prints_table3_rows_and_both_ratio_goals():
    res, out = run('bench_efficiency', ['--backbone', 'resnet18', '--audio', 'vggish_small', '--size', '64', '--batch', '1',
                                        '--runs', '1', '--warmup', '0', '--threads', '1', '--device', 'cpu'])
    for row in ('| EZ-VSL |', '| SMR |', '| SPS |'): assert row in out, row
    assert 'SPS / EZ-VSL inference time' in out and 'SMR / EZ-VSL inference time' in out

def test_bench_refine_and_affinity_print_their_goals():
    res, out = run('bench_refine', ['--batch', '1', '--size', '12', '--dim', '8', '--radius', '3', '--repeats', '1',
                                    '--slider-repeats', '2', '--threads', '1', '--width-batch', '2', '--width-dim', '4'])
    assert 'dense t products' in out and 'speed ratio at batch 2, 4 channels' in out
    assert out.count('(goal >= 30x: met, against the faster)') + out.count('(goal >= 30x: MISSED, against the faster)') == 2
    assert res['ratio'] > 0 and res['ratio_width'] > 0 and res['rel'] < 1e-5 and res['rel_width'] < 1e-5
    with pytest.raises(SystemExit): run('bench_affinity', ['--clock', 'cpu', '--threads', '2'])  # CPU time counts one thread
    res, out = run('bench_affinity', ['--batch', '1', '--size', '12', '--dim', '8', '--radius', '3', '--runs', '1', '--threads', '1',
                                      '--clock', 'cpu'])
    assert 'forward:  compiled' in out and 'backward: compiled' in out and 'cpu clock' in out
    assert res['ratio_forward'] > 0 and res['ratio_backward'] > 0

def test_bench_gpu_runs_on_the_cpu_at_the_tiny_size():
    "The GPU script, on the CPU: every part runs (fp16 with its scaler, bf16 channels-last) and every check passes."
    res, out = run('bench_gpu', ['--device', 'cpu', '--size', 'tiny', '--modes', 'off', 'fp16', 'bf16+cl', '--reps', '1',
                                 '--fps-batch', '1', '--threads', '1'])
    assert out.startswith('bench_gpu: CPU') and ' torch ' in out and ' commit ' in out
    for part in ('1. training step', '2. Table 3', '| EZ-VSL |', '| SMR |', '| SPS |', "Eq. 3 'compiled' on cpu: gradients",
                 'sparse walk, CSR on cpu', 'checks: all pass'): assert part in out, part
    assert [r['mode'] for r in res['steps']] == ['off', 'fp16', 'bf16+cl']
    assert all(r['finite'] and r['ms'] > 0 and r['peak_gib'] is None for r in res['steps'])
    assert res['ok'] and len(res['checks']) == 8 and set(res['fps'][1]) == {'EZ-VSL', 'SMR', 'SPS'}
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit): run('bench_gpu', ['--device', 'cuda', '--size', 'tiny'])

def test_bench_amp_cpu_prints_each_variant():
    res, out = run('bench_amp_cpu', ['--size', 'tiny', '--rounds', '1', '--threads', '1'])
    for name in ('float32', 'bf16 autocast', 'float32 channels-last'): assert f'  {name} ' in out, name
    assert set(res) == {'float32', 'bf16 autocast', 'float32 channels-last'} and res['float32']['vs_float32'] == 1.0
    assert all(r['median_ms'] > 0 for r in res.values())

def test_bench_early_loss_runs_each_variant_on_a_tiny_stamp_build(tmp_path):
    "The lever table's script: every variant trains from the same batches and is printed against the chance loss."
    import numpy as np
    from PIL import Image
    from uspl.data.stamps import build_stamps, write_fake_stamps
    src = write_fake_stamps(tmp_path/'stamps', n=4); (tmp_path/'bg').mkdir()
    yy, xx = np.mgrid[:160, :200]
    Image.fromarray(np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)).save(tmp_path/'bg/photo.png')
    build_stamps(src=src, backgrounds=tmp_path/'bg', out=tmp_path/'d', n_train=12, n_val=2, n_test=2, img_size=64, workers=1, progress=False)
    res, out = run('bench_early_loss', ['--root', str(tmp_path/'d'), '--size', 'tiny', '--steps', '3', '--threads', '1',
                                        '--variant', 'stage 4, lr 1e-4', '--variant', 'stage 4, lr 1e-3, f_v frozen',
                                        '--variant', 'MMICL, lr 2e-4', '--jobs', '2'])
    assert res['chance'] == pytest.approx(2 * np.log(8)) and 'chance 2 ln 8' in out
    assert list(res['means']) == ['stage 4, lr 1e-4', 'stage 4, lr 1e-3, f_v frozen', 'MMICL, lr 2e-4']  # in order, from 2 jobs
    assert all(len(v) == 1 and np.isfinite(v[0]) for v in res['means'].values()) and out.count('| last ') == 3
    # each row against its own chance: ln B for Eq. 2's one way (USPL's MMICL), 2 ln B for EZ-VSL's two ways
    for name, chance in (('MMICL, lr 2e-4', np.log(8)), ('stage 4, lr 1e-4', 2 * np.log(8))):
        last, diff = map(float, re.search(re.escape(name) + r' +[\d.]+ +\| last ([\d.]+) = chance ([-+][\d.]+)', out).groups())
        assert last - diff == pytest.approx(chance, abs=2e-3), (name, out)

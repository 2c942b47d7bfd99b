"""A USPL training step (the overall loss, Eq. 11) on the CPU: float32, bf16 autocast (`--amp bf16`) and channels-last.

    python benchmarks/bench_amp_cpu.py [--size cpu|tiny] [--threads 1] [--rounds 5]

The three variants are built once each (same seed) and timed interleaved: in each round every variant takes one step
in turn, so a change in the machine's load hits all alike; round 0 is a warm-up and not counted. Printed: the median
and the fastest step of each, and each variant's median over float32's. Channels-last is switched on in the kit only
where this shows it pays; bf16 on a CPU depends on the CPU's bfloat16 instructions (printed: avx512_bf16 / amx_bf16).
"""
import argparse, statistics, time
from pathlib import Path
import torch
from torch.utils.data import default_collate
from uspl.evaluation.compare import size_config
from uspl.methods.base import build_method
from uspl.data.synthetic import SyntheticScenes
from uspl.engine.train import make_optimizer, autocast_for, step_generator

VARIANTS = (('float32', 'off', False), ('bf16 autocast', 'bf16', False), ('float32 channels-last', 'off', True))

def cpu_flags() -> str:
    "The CPU's bfloat16 instruction sets, as /proc/cpuinfo names them ('' elsewhere)."
    try: flags = set(Path('/proc/cpuinfo').read_text().split())
    except OSError: return ''
    return ' '.join(sorted(f for f in flags if 'bf16' in f))

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', choices=('cpu', 'tiny'), default='cpu')
    p.add_argument('--threads', type=int, default=1, help='CPU threads (the demo trains with 1 a job)')
    p.add_argument('--rounds', type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = size_config(a.size, 0)
    ds = SyntheticScenes.from_config(cfg, 'train', cfg.batch_size)
    batch = default_collate([ds[i] for i in range(cfg.batch_size)])
    runs = []
    for name, amp, cl in VARIANTS:
        torch.manual_seed(0); m = build_method(cfg).train(); opt = make_optimizer(m, cfg); b = dict(batch)
        if cl: m = m.to(memory_format=torch.channels_last); b['image'] = b['image'].contiguous(memory_format=torch.channels_last)
        runs.append((name, amp, m, opt, b, []))
    for r in range(a.rounds + 1):
        for name, amp, m, opt, b, ts in runs:
            t0 = time.perf_counter()
            with autocast_for(amp, torch.device('cpu')): loss = m.losses(b, epoch=cfg.warmup_epochs, generator=step_generator(0, r))['loss']
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            if r: ts.append(time.perf_counter() - t0)
    base = statistics.median(runs[0][5])
    print(f"USPL training step (Eq. 11), size {a.size} ({cfg.visual_backbone} at {cfg.img_size}, batch {cfg.batch_size}), "
          f"{a.threads} thread(s), {a.rounds} interleaved rounds; CPU bf16 flags: {cpu_flags() or 'none'}")
    res = {}
    for name, amp, m, opt, b, ts in runs:
        med = statistics.median(ts); res[name] = dict(median_ms=1000 * med, min_ms=1000 * min(ts), vs_float32=med / base)
        print(f"  {name:24s} median {1000 * med:8.1f} ms  fastest {1000 * min(ts):8.1f} ms  {med / base:5.2f}x float32's median")
    return res

if __name__ == '__main__': main()

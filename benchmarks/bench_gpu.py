"""The kit on a GPU: a paper-size USPL training step with and without mixed precision, Table 3's inference frames/s,
and Eq. 3 and the sparse random walk on the device checked against the CPU.

    python benchmarks/bench_gpu.py                             # on a CUDA device: the paper's config, batch 32
    python benchmarks/bench_gpu.py --device cpu --size tiny    # the same script at the tests' tiny size on a CPU

Three parts, each printed as a table:
1. *Training step* (Eq. 11, after the warm-up epochs: MMICL + SMR + SPS), at `--size paper` the config of
   `uspl.core.USPLConfig` (ResNet-50 OS16 at 224, VGGish, batch 32; no pretrained weights: the speed is the same).
   One row per mode: `off` (float32), `bf16` and `fp16` (`torch.autocast`; fp16 with a `torch.amp.GradScaler`), and
   the same with `+cl` (model and frames channels-last). Each mode builds the model afresh from the same seed and
   trains on the same batch, already on the device (the input pipeline is not timed): `--warmup` untimed steps (the
   first compiles Eq. 3's kernel), then `--reps` timed ones, each between two `torch.cuda.synchronize()`; ms = median,
   images/s = batch / median. Peak memory: `torch.cuda.max_memory_allocated` over the mode's steps (CUDA only).
   The loss of the first step (same weights, same batch) shows how far each mode's numerics move from float32.
   Under autocast, Eq. 3, its loss and the walk run in float32 (`uspl.components.affinity.local_affinity`, `propagate`).
2. *Table 3* (float32, eval mode): `bench_efficiency.efficiency_table`, frames/s of the EZ-VSL, SMR and SPS paths at
   each `--fps-batch` (the paper: EZ-VSL 15.45, SMR 4.34, SPS 9.94 FPS).
3. *Checks*: `local_affinity` with `kernel='compiled'` and `'eager'` on the device (values and gradients, ties
   included) against the eager kernel on the CPU; the transition, the sparse (CSR) walk and the autograd walk on the
   device against the CPU; `refine` under bf16 autocast against float32 on the device. Max abs difference, pass/fail.
   Exit status 1 if a check fails.

Header: the device's name, torch and CUDA versions, the commit (`git describe --always --dirty`).
"""
from __future__ import annotations
import argparse, os, platform, statistics, subprocess, sys, time
from pathlib import Path
import torch
from torch.utils.data import default_collate

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_efficiency import efficiency_table, markdown, PAPER
from uspl.core import USPLConfig, seed_everything
from uspl.evaluation.compare import size_config
from uspl.methods.base import build_method
from uspl.data.synthetic import SyntheticScenes
from uspl.engine.train import make_optimizer
from uspl.components.affinity import local_affinity, local_transition, propagate, refine

DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}
MODES = ('off', 'bf16', 'fp16', 'off+cl', 'bf16+cl')

def commit() -> str:
    "The repository's commit (with -dirty when the tree has changes), or 'unknown'."
    try: return subprocess.run(['git', 'describe', '--always', '--dirty'], cwd=Path(__file__).resolve().parent,
                               capture_output=True, text=True, timeout=10).stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError): return 'unknown'

def device_name(dev:torch.device) -> str:
    if dev.type == 'cuda':
        p = torch.cuda.get_device_properties(dev)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}), CUDA {torch.version.cuda}"
    return f"CPU: {os.cpu_count()} core(s) ({platform.processor() or platform.machine()}), {torch.get_num_threads()} thread(s)"

def sync(dev:torch.device):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def to_device(batch:dict, dev:torch.device, channels_last:bool=False) -> dict:
    out = {k: v.to(dev, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if channels_last: out['image'] = out['image'].contiguous(memory_format=torch.channels_last)
    return out

def train_step_row(cfg:USPLConfig, batch:dict, mode:str, dev:torch.device, reps:int, warmup:int) -> dict:
    "Time the Eq. 11 training step in `mode` ('off', 'bf16', 'fp16', optionally '+cl'); one row of the table."
    amp, cl = mode.split('+')[0], mode.endswith('+cl')
    dtype = DTYPES[amp]
    seed_everything(cfg.seed)
    model = build_method(cfg, 'uspl').train().to(dev)
    if cl: model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == 'fp16')
    b = to_device(batch, dev, cl)
    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model.losses(b, epoch=cfg.warmup_epochs, generator=torch.Generator().manual_seed(0))['loss']
        scaler.scale(loss).backward(); scaler.step(opt); scaler.update()
        return loss.detach()
    if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
    first = step().item(); sync(dev)
    for _ in range(warmup - 1): step()
    times, losses = [], []
    for _ in range(reps):
        sync(dev); t0 = time.perf_counter(); losses.append(step()); sync(dev); times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == 'cuda' else None
    last = losses[-1].item()
    del model, opt, b
    ms = 1e3 * statistics.median(times)
    return dict(mode=mode, ms=ms, images_s=batch['image'].shape[0] / ms * 1e3, peak_gib=peak, first_loss=first,
                last_loss=last, finite=all(map(lambda x: torch.isfinite(x).item(), losses)))

def checks(dev:torch.device, C:int, H:int, W:int, radius:int, beta:float, t:int) -> list[tuple]:
    "(name, max abs difference, tolerance) of Eq. 3 and the walk on `dev` against the CPU."
    g = torch.Generator().manual_seed(0)
    f = 0.002 * torch.randn(2, C, H, W, generator=g)            # affinities around 0.5: neither 1 nor underflowed
    f[:, :, :2, :3] = 0.001                                     # identical features: ties in every channel
    m = torch.rand(2, 1, H, W, generator=g)
    def eq3(x, kernel):
        x = x.clone().requires_grad_(True); a = local_affinity(x, radius, kernel=kernel)
        gy = torch.randn(a.a.shape, generator=torch.Generator().manual_seed(1)).to(x.device)
        gx, = torch.autograd.grad((a.a * gy).sum(), x)
        return a.a.detach().cpu(), gx.cpu()
    a_ref, g_ref = eq3(f, 'eager')
    rows, tol_g = [], 1e-5 * max(1., g_ref.abs().max().item())
    for kernel in ('compiled', 'eager'):
        try:
            a_dev, g_dev = eq3(f.to(dev), kernel)
            rows += [(f"Eq. 3 '{kernel}' on {dev.type}: affinities", (a_dev - a_ref).abs().max().item(), 1e-5),
                     (f"Eq. 3 '{kernel}' on {dev.type}: gradients", (g_dev - g_ref).abs().max().item(), tol_g)]
        except Exception as e:  # e.g. no compiler for this device: a failed check, not a crash
            rows.append((f"Eq. 3 '{kernel}' on {dev.type}: {type(e).__name__}: {str(e).splitlines()[0][:80] if str(e) else ''}", float('inf'), 0.))
    with torch.no_grad():
        aff = local_affinity(f, radius, kernel='eager'); tr = local_transition(aff, beta)
        aff_d = local_affinity(f.to(dev), radius, kernel='eager'); tr_d = local_transition(aff_d, beta)
        rows.append((f"transition (Eq. 7) on {dev.type}", (tr_d.T.cpu() - tr.T).abs().max().item(), 1e-5))
        rows.append((f"sparse walk, CSR on {dev.type} (Eq. 8)" + ('' if tr_d.csr is not None else ': no CSR matrix'),
                     (propagate(tr_d, m.to(dev), t).cpu() - propagate(tr, m, t)).abs().max().item() if tr_d.csr is not None else float('inf'), 1e-5))
        ref = refine(f, m, radius, beta, t, kernel='eager')
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            amp = refine(f.to(dev), m.to(dev), radius, beta, t)
        rows.append((f"refine under bf16 autocast on {dev.type} (walk kept in float32)", (amp.float().cpu() - ref).abs().max().item(), 1e-5))
    md = m.to(dev).requires_grad_(True)                         # under autograd: the per-offset walk, no CSR
    rows.append((f"autograd walk on {dev.type} (Eq. 8, per offset)", (propagate(tr_d._replace(csr=None), md, t).detach().cpu() - propagate(tr, m, t)).abs().max().item(), 1e-5))
    return rows

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help="'cuda', 'cuda:1', 'cpu' (default: cuda where present)")
    p.add_argument('--size', choices=('paper', 'tiny'), default='paper', help="the paper's config or the tests' tiny one")
    p.add_argument('--batch', type=int, default=None, help='training batch (default: 32 paper, 2 tiny)')
    p.add_argument('--fps-batch', type=int, nargs='+', default=None, help='Table 3 batches (default: 1 32 paper, 1 2 tiny)')
    p.add_argument('--modes', nargs='+', choices=MODES, default=list(MODES), help='training-step modes')
    p.add_argument('--reps', type=int, default=None, help='timed training steps per mode (default: 10 paper, 2 tiny)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps first, >= 1 (default: 3 paper, 1 tiny)')
    p.add_argument('--runs', type=int, default=None, help='Table 3 timed rounds (default: 11 paper, 1 tiny)')
    p.add_argument('--threads', type=int, default=None, help='CPU threads (default: torch\'s)')
    a = p.parse_args(argv)
    try: dev = torch.device(a.device)
    except RuntimeError as e: p.error(f'--device {a.device}: {e}')
    if dev.type == 'cuda' and not torch.cuda.is_available(): p.error(f'--device {a.device}: no CUDA device here')
    if dev.type not in ('cuda', 'cpu'): p.error(f'--device {a.device}: only cuda and cpu are supported')
    paper = a.size == 'paper'
    B = a.batch or (32 if paper else 2)
    reps, warmup, runs = a.reps or (10 if paper else 2), a.warmup or (3 if paper else 1), a.runs or (11 if paper else 1)
    fps_batches = a.fps_batch or ([1, 32] if paper else [1, 2])
    if min(B, reps, warmup, runs, *fps_batches) < 1: p.error('--batch, --reps, --warmup, --runs and --fps-batch must be >= 1')
    if a.threads: torch.set_num_threads(a.threads)
    cfg = USPLConfig() if paper else size_config('tiny')
    cfg = cfg.update(batch_size=max(2, B), synth_train=B)
    print(f"bench_gpu: {device_name(dev)}; torch {torch.__version__}; commit {commit()}; load average {os.getloadavg()[0]:.1f}")
    print(f"config: size {a.size}: {cfg.visual_backbone} OS{cfg.output_stride} at {cfg.img_size}, audio {cfg.audio_encoder}, "
          f"affinity {cfg.aff_dim}-d on a {cfg.img_size // cfg.aff_stride}x{cfg.img_size // cfg.aff_stride} grid, r={cfg.radius}")

    ds = SyntheticScenes.from_config(cfg, 'train', B)
    batch = default_collate([ds[i] for i in range(B)])
    print(f"\n1. training step (Eq. 11: MMICL + SMR + SPS), batch {B}, median of {reps} after {warmup} untimed:")
    print("| mode | ms / step | images/s | speed-up | peak memory (GiB) | first-step loss | loss finite |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for mode in a.modes:
        try: r = train_step_row(cfg, batch, mode, dev, reps, warmup)
        except Exception as e:
            print(f"| {mode} | failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''} | | | | | |"); continue
        rows.append(r)
        base = next((x['ms'] for x in rows if x['mode'] == 'off'), None)
        peak = f"{r['peak_gib']:.2f}" if r['peak_gib'] is not None else 'n/a (CUDA only)'
        up = f"{base / r['ms']:.2f}x" if base else '-'
        print(f"| {mode} | {r['ms']:.1f} | {r['images_s']:.1f} | {up} | {peak} | "
              f"{r['first_loss']:.4f} | {'yes' if r['finite'] else 'NO'} |")

    print(f"\n2. Table 3, inference frames/s (float32, eval mode; median of {runs} interleaved rounds):")
    fps = {}
    for b in fps_batches:
        t = efficiency_table(cfg, b, runs, 1 if paper else 0, device=str(dev))
        fps[b] = {x['method']: x['fps'] for x in t}
        print(f"\nbatch {b}:\n" + markdown(t, paper))
    if paper: print("the paper's FPS: " + ', '.join(f"{k} {v[2]}" for k, v in PAPER.items()) + ' (batch and card not stated)')

    C, S = cfg.aff_dim, cfg.img_size // cfg.aff_stride
    chk = checks(dev, C, S, S, cfg.radius, cfg.beta, cfg.t)
    print(f"\n3. checks on {dev.type} against the CPU (features [2,{C},{S},{S}], r={cfg.radius}, beta={cfg.beta}, t={cfg.t}):")
    for name, diff, tol in chk:
        print(f"  {name:72s} max abs diff {diff:.2e} (tolerance {tol:.0e}): {'pass' if diff <= tol else 'FAIL'}")
    ok = all(d <= tol for _, d, tol in chk)
    print(f"checks: {'all pass' if ok else 'FAILED'}; load average at the end {os.getloadavg()[0]:.1f}")
    return dict(steps=rows, fps=fps, checks=chk, ok=ok)

if __name__ == '__main__':
    sys.exit(0 if main()['ok'] else 1)

"""One USPL training step broken into its parts, and its ratio to the visual backbone's own forward+backward.

    python benchmarks/bench_train_step.py [--size cpu|tiny|paper] [--batch N] [--threads 2] [--reps 5]

Every figure is measured in this process (median of --reps). Goal (issue: speed): the whole step <= 2.0x the
backbone's forward+backward on the same batch, at the demo's config and at the paper's (batch 8 on a CPU).
The whole step and the backbone are timed twice: with the C library's default allocator, then after
`uspl.engine.train.tune_allocator()` (what the `uspl` training commands use); the parts are timed after it. The floor line is
a USPL warm-up step (encoders + MMICL, no SMR or SPS) over the same backbone: what the step costs before the method's
own heads.
"""
import argparse, statistics, time
import torch
from torch.utils.data import default_collate
from uspl.core import USPLConfig, upsample_maps
from uspl.evaluation.compare import size_config
from uspl.methods.base import build_method
from uspl.data.synthetic import SyntheticScenes
from uspl.components.trimap import trimap_from_coarse
from uspl.components.affinity import random_walk
from uspl.components.sps import seg_loss
from uspl.engine.train import make_optimizer, tune_allocator

def timed(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--size', choices=('cpu', 'tiny', 'paper'), default='cpu', help="the demo's size, the tests' smoke size, or the paper's")
    p.add_argument('--batch', type=int, default=None, help='default: the config batch (cpu) or 8 (paper)')
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--reps', type=int, default=5)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = USPLConfig(audio_encoder='vggish') if a.size == 'paper' else size_config(a.size)
    B = a.batch or (cfg.batch_size if a.size == 'cpu' else 8)
    cfg = cfg.update(batch_size=max(2, B), synth_train=B)
    torch.manual_seed(0)
    model = build_method(cfg, 'uspl').train()
    opt = make_optimizer(model, cfg)
    ds = SyntheticScenes.from_config(cfg, 'train', B)
    b = default_collate([ds[i] for i in range(B)])
    img, aud = b['image'], b['audio']
    c, smr = model.cfg, model.smr
    parts = {}
    def step(record):
        t = {}
        def mark(k, t0): t[k] = time.perf_counter() - t0
        t0 = time.perf_counter(); a = model.mmicl(img, aud); mark('encoders + projectors forward', t0)
        t0 = time.perf_counter(); l_mm = model.mmicl.loss(a, torch.Generator().manual_seed(0)); mark('MMICL loss (Eq. 2)', t0)
        t0 = time.perf_counter(); size = smr.grid(img.shape); grid = upsample_maps(a.coarse.detach()[:, None], size)
        tri = trimap_from_coarse(img, grid, size, c.beta_l, c.beta_h, c.pamr_dilations, c.pamr_iters).tri; mark('PAMR + tri-map (Eqs. 4-5)', t0)
        t0 = time.perf_counter(); aff = smr.affinity(a.feats, size)
        from uspl.components.smr import SMROut
        l_aff = smr.loss(SMROut(grid, tri, aff, None)); mark('PMV-aff + affinities + loss (Eqs. 3, 6)', t0)
        t0 = time.perf_counter()
        with torch.no_grad(): fine = random_walk(aff._replace(a=aff.a.detach()), grid, c.beta, c.t)
        mark('random walk (Eqs. 7-8)', t0)
        t0 = time.perf_counter(); l_seg = seg_loss(model.segment(img, a), fine, soft=c.seg_soft); mark('SPS forward + loss (Eqs. 9-10)', t0)
        l1, l2, l3 = c.lambdas
        t0 = time.perf_counter(); opt.zero_grad(set_to_none=True); (l1 * l_mm + l2 * l_aff + l3 * l_seg).backward(); mark('backward (all)', t0)
        t0 = time.perf_counter(); opt.step(); mark('optimiser step', t0)
        for k, v in t.items(): record.setdefault(k, []).append(v)
    vis = model.mmicl.visual
    def backbone():
        vis.zero_grad(set_to_none=True)
        sum(f.float().mean() for f in vis(img)).backward()
    def whole(epoch):
        opt.zero_grad(set_to_none=True)
        model.losses(b, epoch=epoch, generator=torch.Generator().manual_seed(0))['loss'].backward(); opt.step()
    def measure():
        backbone(); whole(c.warmup_epochs); whole(c.warmup_epochs)  # the first calls compile Eq. 3's kernels
        return timed(lambda: whole(c.warmup_epochs), a.reps), timed(backbone, a.reps)
    w0, bb0 = measure()
    tuned = tune_allocator()
    w1, bb1 = measure()
    whole(0); floor = timed(lambda: whole(0), a.reps)
    step({})  # warm-up
    for _ in range(a.reps): step(parts)
    med = {k: statistics.median(v) for k, v in parts.items()}
    total = sum(med.values())
    print(f"USPL training step, size {a.size} ({cfg.visual_backbone} at {cfg.img_size}, batch {B}, {a.threads} threads), median of {a.reps}:")
    for k, v in med.items(): print(f"  {k:42s} {1000 * v:8.1f} ms  {100 * v / total:5.1f}%")
    print(f"  {'sum of parts':42s} {1000 * total:8.1f} ms")
    print(f"  {'whole step, default allocator':42s} {1000 * w0:8.1f} ms   backbone fwd+bwd {1000 * bb0:7.1f} ms   ratio {w0 / bb0:.2f}")
    print(f"  {'whole step, tune_allocator' + ('' if tuned else ' (not glibc: no-op)'):42s} {1000 * w1:8.1f} ms   backbone fwd+bwd {1000 * bb1:7.1f} ms   ratio {w1 / bb1:.2f}")
    print(f"  {'floor: warm-up step (encoders + MMICL)':42s} {1000 * floor:8.1f} ms   ratio {floor / bb1:.2f}")
    r = w1 / bb1
    print(f"step / backbone = {r:.2f} (goal <= 2.0: {'met' if r <= 2.0 else 'MISSED'}; default allocator {w0 / bb0:.2f})")
    return dict(ratio=r, ratio_default_allocator=w0 / bb0, floor=floor / bb1, parts_ms={k: 1000 * v for k, v in med.items()})

if __name__ == '__main__': main()

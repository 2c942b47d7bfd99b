"""How fast the contrastive warm-up starts to learn on a dataset, for a few settings of the recipe: the lever tables of the results page.

    python benchmarks/bench_early_loss.py --root STAMPS_S4 [--steps 200] [--threads 1] [--jobs 1]
    python benchmarks/bench_early_loss.py --root STAMPS_S4 --variant 'stage 2, lr 1e-4' --variant 'stage 4, lr 1e-4'

Each variant trains one method's warm-up loss at the `cpu` size with some fields changed: EZ-VSL's Eq. 2 (both
directions, no mask) or USPL's MMICL (Eq. 2 as the paper writes it: audio-to-visual, with the mask augmentation δ).
All start from the same seed and read the same batches (drawn with replacement from the training split by one
generator), so the only difference between two rows of one method is the setting. Every variant states its learning
rate and mask, so the rows do not move when the `cpu` size does. Printed: the mean loss over each `--every` steps and,
at the end, the mean of the last ones against the chance value (2 ln B for the two-way loss, ln B for one way: the loss
of maps that ignore the sound). A variant that ends near chance has not started to align sound and image in that many
steps. Where the root holds a pair split (`uspl data stamps --pairs N`) the audio probe of the embeddings (`uspl.metrics.
audio_probe`, nearest class mean over the pair split's clips) is printed before and after. `--jobs N` runs N variants at
a time, one process each.
"""
import argparse, math, queue, statistics, time, multiprocessing
import torch
from torch.utils.data import default_collate
from uspl.evaluation.compare import size_config, pair_split, probe_clips, probe_run
from uspl.methods.base import build_method
from uspl.data.datasets import build_dataset
from uspl.engine.train import make_optimizer

# name -> (method, config fields over the `cpu` size, whether the visual encoder f_v is frozen)
EZ, MM = 'ezvsl', 'uspl'
VARIANTS = {
    'stage 2, lr 1e-4': (EZ, dict(lr=1e-4), False),                              # the paper's learning rate
    'stage 2, lr 2e-4': (EZ, dict(lr=2e-4), False),
    'stage 2, lr 3e-4': (EZ, dict(lr=3e-4), False),
    'stage 2, lr 1e-3': (EZ, dict(lr=1e-3), False),
    'stage 2, lr 1e-3, f_v frozen': (EZ, dict(lr=1e-3), True),
    'stage 2, lr 1e-3, tau 0.2': (EZ, dict(lr=1e-3, tau=0.2), False),
    'stage 3 at stride 8, lr 1e-3': (EZ, dict(visual_out_indices=(1, 2, 3), output_stride=8, lr=1e-3), False),
    'stage 4, lr 1e-4': (EZ, dict(visual_out_indices=(1, 2, 3, 4), lr=1e-4), False),  # the paper's stages and lr
    'stage 4, lr 1e-3': (EZ, dict(visual_out_indices=(1, 2, 3, 4), lr=1e-3), False),
    'stage 4, lr 1e-3, f_v frozen': (EZ, dict(visual_out_indices=(1, 2, 3, 4), lr=1e-3), True),
    'MMICL, lr 2e-4': (MM, dict(lr=2e-4, drop=0.5, symmetric=False), False),     # Eq. 2 with the paper's δ
    'MMICL, lr 2e-4, drop 0': (MM, dict(lr=2e-4, drop=0.0, symmetric=False), False),
    'MMICL, lr 2e-4, symmetric': (MM, dict(lr=2e-4, drop=0.5, symmetric=True), False),
    'MMICL, lr 1e-3': (MM, dict(lr=1e-3, drop=0.5, symmetric=False), False),
}

def chance_loss(method:str, cfg) -> float:
    "The warm-up loss of maps that ignore the sound: 2 ln B for EZ-VSL and symmetric MMICL, ln B for Eq. 2's one way."
    return (2 if method == EZ or cfg.symmetric else 1) * math.log(cfg.batch_size)

_CTX = {}
def _init(ctx, threads):
    _CTX.update(ctx); torch.set_num_threads(threads)

def run_variant(name:str, seed:int=0) -> dict:
    "Train variant `name` on the batches of `_CTX` (its items, steps, size, every, clips): the mean loss of each `every` steps, the probe before and after."
    method, fields, frozen = VARIANTS[name]
    items, clips, steps, size, every = (_CTX[k] for k in ('items', 'clips', 'steps', 'size', 'every'))
    cfg = size_config(size, seed).update(**fields)
    torch.manual_seed(seed); m = build_method(cfg, method).train()
    if frozen:
        for p in m.mmicl.visual.parameters(): p.requires_grad_(False)
    opt = make_optimizer(m, cfg)
    def probe():
        if clips is None: return None
        m.eval(); acc = probe_run(m, clips, seed)['accuracy']; m.train(); return acc
    t0, p0 = time.perf_counter(), probe()
    g, losses, means = torch.Generator().manual_seed(seed), [], []
    for step in range(steps):
        idx = torch.randint(len(items), (cfg.batch_size,), generator=g).tolist()
        b = default_collate([{k: items[i][k] for k in ('image', 'audio')} for i in idx])
        loss = m.losses(b, 0, torch.Generator().manual_seed(step))['loss']
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); losses.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps: means.append(statistics.fmean(losses[-every:]))
    return dict(name=name, means=means, chance=chance_loss(method, cfg), probe=(p0, probe()), sec=time.perf_counter() - t0)

def _forked(names:list, jobs:int):
    "`run_variant` of each name in `jobs` forked processes (they inherit `_CTX`); the results in the order of `names`."
    mp = multiprocessing.get_context('fork')
    q = mp.Queue()
    def work(part):
        for n in part: q.put(run_variant(n))
    procs = [mp.Process(target=work, args=(names[i::jobs],)) for i in range(jobs)]
    for pr in procs: pr.start()
    got = {}
    try:
        for n in names:
            while n not in got:
                try: r = q.get(timeout=2); got[r['name']] = r
                except queue.Empty:
                    if not any(pr.is_alive() for pr in procs) and q.empty(): raise RuntimeError(f"a variant's process died before {n!r} finished")
            yield got[n]
    finally:
        for pr in procs:
            pr.join(timeout=1)
            if pr.is_alive(): pr.kill()

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', required=True, help='an s4-layout dataset root (e.g. `uspl data stamps --out ROOT`)')
    p.add_argument('--size', choices=('cpu', 'tiny'), default='cpu')
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--every', type=int, default=25, help='steps per printed mean')
    p.add_argument('--threads', type=int, default=1, help='torch threads per variant')
    p.add_argument('--jobs', type=int, default=1, help='variants at a time, one process each')
    p.add_argument('--variant', action='append', choices=tuple(VARIANTS), help='default: all')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = size_config(a.size)
    ds = build_dataset('s4', a.root, 'train', cfg)
    pairs = pair_split('s4', a.root, cfg)
    ctx = dict(items=[ds[i] for i in range(len(ds))], clips=probe_clips(pairs) if pairs is not None else None,
               steps=a.steps, size=a.size, every=a.every)
    probe = f"; audio probe on {len(pairs)} pair-split clips, before -> after" if pairs is not None else ''
    print(f"The warm-up loss on {len(ctx['items'])} training scenes of {a.root}, batch {cfg.batch_size}, {a.steps} steps, "
          f"{a.threads} thread(s) x {a.jobs} job(s); chance 2 ln {cfg.batch_size} = {2 * math.log(cfg.batch_size):.3f} "
          f"(EZ-VSL, symmetric), ln {cfg.batch_size} = {math.log(cfg.batch_size):.3f} (Eq. 2's one way); "
          f"mean loss per {a.every} steps{probe}:")
    names, res = a.variant or list(VARIANTS), {}
    _init(ctx, a.threads)
    outs = map(run_variant, names) if a.jobs <= 1 else _forked(names, a.jobs)
    for r in outs:
        res[r['name']] = r['means']; last = r['means'][-1]
        pr = '' if r['probe'][0] is None else f"; probe {100 * r['probe'][0]:.1f} -> {100 * r['probe'][1]:.1f}%"
        print(f"  {r['name']:<30} " + ' '.join(f'{x:.2f}' for x in r['means'])
              + f"  | last {last:.3f} = chance {last - r['chance']:+.3f}{pr} ({r['sec']:.0f} s)", flush=True)
    return dict(chance=2 * math.log(cfg.batch_size), means=res)

if __name__ == '__main__': main()

"""How fast Eq. 2 starts to learn on a dataset, for a few settings of the recipe: the lever table of the results page.

    python benchmarks/bench_early_loss.py --root STAMPS_S4 [--steps 200] [--threads 1]
    python benchmarks/bench_early_loss.py --root STAMPS_S4 --variant 'stage 2, lr 1e-4' --variant 'stage 4, lr 1e-4'

Each variant is EZ-VSL's loss (Eq. 2, both directions, no mask) at the `cpu` size with some fields changed; all start
from the same seed and read the same batches (drawn with replacement from the training split by one generator), so the
only difference between two rows is the setting. Printed: the mean loss over each 25 steps and, at the end, the mean of
the last 25 against the chance value 2 ln B (the loss of maps that ignore the sound). A variant that ends near chance
has not started to align sound and image in that many steps. Variants run one after the other in this process.
"""
import argparse, math, statistics, time
import torch
from torch.utils.data import default_collate
from uspl.evaluation.compare import size_config
from uspl.methods.base import build_method
from uspl.data.datasets import build_dataset
from uspl.engine.train import make_optimizer

# name -> (config fields over the `cpu` size, whether the visual encoder f_v is frozen)
VARIANTS = {
    'stage 2, lr 1e-4': (dict(lr=1e-4), False),                              # the paper's learning rate
    'stage 2, lr 1e-3': (dict(), False),                                     # the `cpu` size
    'stage 4, lr 1e-4': (dict(visual_out_indices=(1, 2, 3, 4), lr=1e-4), False),  # the paper's stages and lr
    'stage 4, lr 1e-3': (dict(visual_out_indices=(1, 2, 3, 4)), False),
    'stage 4, lr 1e-3, f_v frozen': (dict(visual_out_indices=(1, 2, 3, 4)), True),
}

def run_variant(items:list, fields:dict, frozen:bool, steps:int, size:str='cpu', seed:int=0, every:int=25) -> list:
    "Train EZ-VSL for `steps` steps on batches drawn from `items`; the mean loss of each `every` steps."
    cfg = size_config(size, seed).update(**fields)
    torch.manual_seed(seed); m = build_method(cfg, 'ezvsl').train()
    if frozen:
        for p in m.mmicl.visual.parameters(): p.requires_grad_(False)
    opt = make_optimizer(m, cfg)
    g, losses, means = torch.Generator().manual_seed(seed), [], []
    for step in range(steps):
        idx = torch.randint(len(items), (cfg.batch_size,), generator=g).tolist()
        b = default_collate([{k: items[i][k] for k in ('image', 'audio')} for i in idx])
        loss = m.losses(b, 0, torch.Generator().manual_seed(step))['loss']
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step(); losses.append(loss.item())
        if (step + 1) % every == 0 or step + 1 == steps: means.append(statistics.fmean(losses[-every:]))
    return means

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--root', required=True, help='an s4-layout dataset root (e.g. `uspl data stamps --out ROOT`)')
    p.add_argument('--size', choices=('cpu', 'tiny'), default='cpu')
    p.add_argument('--steps', type=int, default=200)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--variant', action='append', choices=tuple(VARIANTS), help='default: all')
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = size_config(a.size)
    ds = build_dataset('s4', a.root, 'train', cfg)
    items = [ds[i] for i in range(len(ds))]
    chance = 2 * math.log(cfg.batch_size)
    print(f"EZ-VSL's Eq. 2 on {len(items)} training scenes of {a.root}, batch {cfg.batch_size}, {a.steps} steps, "
          f"{a.threads} thread(s); chance 2 ln {cfg.batch_size} = {chance:.3f}; mean loss per 25 steps:")
    res = {}
    for name in a.variant or VARIANTS:
        t0 = time.perf_counter(); means = run_variant(items, *VARIANTS[name], a.steps, a.size)
        res[name] = means
        print(f"  {name:<30} " + ' '.join(f'{x:.2f}' for x in means)
              + f"  | last {means[-1]:.3f} = chance {means[-1] - chance:+.3f} ({time.perf_counter() - t0:.0f} s)")
    return dict(chance=chance, means=res)

if __name__ == '__main__': main()

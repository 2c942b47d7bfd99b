"""Benchmark of Eq. 3 (`uspl.components.affinity.local_affinity`'s pairwise L1 distances), forward and backward, against the
kit's previous implementation (kept below as `RefPairL1`: channels-first, loops over offsets on chunks of ~64 MB of
samples), and against a matrix product with the same multiply-add count. Two kernels of the kit are timed: 'compiled'
(`_PairL1Fused`, torch.compile'd gathers; what `kernel='auto'` picks at this size) and 'eager' (`_PairL1`, channels-last
slices; the fallback where nothing compiles). The first compiled call (compilation) is timed apart and not counted.

    python benchmarks/bench_affinity.py [--threads 2] [--batch 8] [--size 56] [--dim 256] [--radius 7] [--runs 5]

Default: the paper's SMR at 224 input (56x56 grid, 256-d features, r=7: 145 offsets, 72 computed, the rest mirrored).
Timing is interleaved (in each round, every variant runs once in turn, so a change in machine load hits all alike);
each ratio is the median over rounds of the per-round ratio. Goal (issue: Eq. 3 near the machine's limit): the kit's
forward and backward (the compiled kernel) each >= 6x faster than the reference. The values agree to float32 tolerance (printed).
`--clock cpu` (with `--threads 1`) times by the thread's CPU time instead of wall time: on a machine shared with other
jobs, time the process waits for a core is then not counted (their contention for caches and memory still is).

Equal-work matrix product: Eq. 3 here does sum_k (valid pairs of offset k) * C abs-diff-adds per sample; the matrix
product [B*H*W, C] @ [C, 72] does B*H*W*C*72 multiply-adds (the same up to the border pairs): its time is a rough
lower bound for what a fused kernel could reach on this machine.
"""
from __future__ import annotations
import argparse, os, platform, statistics, time
import torch
from torch.autograd.function import once_differentiable
from uspl.components.affinity import _PairL1, _pair_l1, _pair_slices
from uspl.components.trimap import radius_offsets, neighbour_index

GOAL = 6.0

class RefPairL1(torch.autograd.Function):
    "The previous implementation (reference): channels-first, over chunks of samples of ~64 MB."
    @staticmethod
    def forward(ctx, feats, offs):
        B, C, H, W = feats.shape
        d = feats.new_zeros(B, len(offs), H, W)
        n = max(1, 2**26 // (feats[:1].numel() * feats.element_size()))
        for i in range(0, B, n):
            b = slice(i, i + n)
            for k, (dy, dx) in enumerate(offs):
                if (s := _pair_slices(H, W, dy, dx)) is None: continue
                (ys, xs), (yt, xt) = s
                d[b, k, ys, xs] = torch.linalg.vector_norm(feats[b, :, ys, xs] - feats[b, :, yt, xt], ord=1, dim=1)
        ctx.save_for_backward(feats); ctx.offs = offs
        return d

    @staticmethod
    @once_differentiable
    def backward(ctx, gd):
        feats, = ctx.saved_tensors
        B, C, H, W = feats.shape
        gf = torch.zeros_like(feats)
        n = max(1, 2**26 // (feats[:1].numel() * feats.element_size()))
        for i in range(0, B, n):
            b = slice(i, i + n)
            for k, (dy, dx) in enumerate(ctx.offs):
                if (s := _pair_slices(H, W, dy, dx)) is None: continue
                (ys, xs), (yt, xt) = s
                g = torch.sign(feats[b, :, ys, xs] - feats[b, :, yt, xt]).mul_(gd[b, k, None, ys, xs])
                gf[b, :, ys, xs] += g; gf[b, :, yt, xt] -= g
        return gf, None

CLOCK = {'wall': time.perf_counter, 'cpu': time.thread_time}
clock = time.perf_counter

def _time(fn):
    t0 = clock(); out = fn(); return out, clock() - t0

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--batch', type=int, default=8); p.add_argument('--size', type=int, default=56)
    p.add_argument('--dim', type=int, default=256); p.add_argument('--radius', type=int, default=7)
    p.add_argument('--runs', type=int, default=5)
    p.add_argument('--clock', choices=tuple(CLOCK), default='wall', help="'cpu': the thread's CPU time (needs --threads 1)")
    a = p.parse_args(argv)
    if a.clock == 'cpu' and a.threads != 1: p.error('--clock cpu needs --threads 1 (it counts the calling thread only)')
    global clock; clock = CLOCK[a.clock]
    torch.set_num_threads(a.threads)
    B, C, H = a.batch, a.dim, a.size
    O = radius_offsets(a.radius); idx, valid = neighbour_index(a.size, a.size, O)
    offs = [tuple(o) for o in O.tolist()]
    offs = offs[:len(offs) // 2]
    g = torch.Generator().manual_seed(0)
    f = torch.randn(B, C, H, H, generator=g)
    gd = torch.rand(B, len(offs), H, H, generator=g)
    X, Wm = torch.randn(B * H * H, C, generator=g), torch.randn(C, len(offs), generator=g)
    work = sum(((H - abs(dy)) * (H - abs(dx))) for dy, dx in offs if _pair_slices(H, H, dy, dx)) * C * B

    def fwd_bwd(fn):
        x = f.clone().requires_grad_()
        d, tf = _time(lambda: fn(x))
        _, tb = _time(lambda: d.backward(gd))
        return d.detach(), x.grad, tf, tb
    kernels = {'compiled': lambda x: _pair_l1(x, O, idx, valid, 'compiled'), 'eager': lambda x: _PairL1.apply(x, offs),
               'ref': lambda x: RefPairL1.apply(x, offs)}
    t0 = time.perf_counter(); fwd_bwd(kernels['compiled']); t_compile = time.perf_counter() - t0
    rows = {k: [] for k in (*kernels, 'mm')}; out = {}
    for r in range(a.runs + 1):  # round 0: warm-up, not counted
        for k, fn in kernels.items():
            out[k] = fwd_bwd(fn)
            if r: rows[k].append(out[k][2:])
        _, tm = _time(lambda: X @ Wm)
        if r: rows['mm'].append(tm)
    med = lambda xs: statistics.median(xs) * 1e3
    mm = med(rows['mm'])
    ms = {k: (med([t[0] for t in rows[k]]), med([t[1] for t in rows[k]])) for k in kernels}
    ratio = {k: tuple(statistics.median(r[i] / n[i] for r, n in zip(rows['ref'], rows[k])) for i in (0, 1)) for k in ('compiled', 'eager')}
    rel = lambda k, i: (out[k][i] - out['ref'][i]).abs().max().item() / out['ref'][i].abs().max().item()
    mark = lambda ok: 'met' if ok else 'MISSED'
    print(f"Eq. 3 pairwise L1: batch {B}, {H}x{H}, dim {C}, r={a.radius} ({len(offs)} one-sided offsets); "
          f"{a.threads} thread(s), torch {torch.__version__}, {platform.machine()}; median of {a.runs} interleaved rounds; "
          f"{a.clock} clock; load average {os.getloadavg()[0]:.1f}")
    print(f"work: {work / 1e9:.3f} G abs-diff-adds; matrix product of equal multiply-adds ([{B * H * H},{C}] @ [{C},{len(offs)}]): {mm:.1f} ms")
    print(f"first compiled forward+backward (compiling, or the on-disk cache): {t_compile:.1f} s, not counted")
    for i, name in enumerate(('forward', 'backward')):
        for k in ('compiled', 'eager'):
            goal = f"(goal >= {GOAL:g}x: {mark(ratio[k][i] >= GOAL)})" if k == 'compiled' else '(the fallback; no goal)'
            print(f"{name + ':':9s} {k:8s} {ms[k][i]:7.1f} ms   reference {ms['ref'][i]:7.1f} ms   ratio {ratio[k][i]:5.1f}x {goal:24s}  "
                  f"{k} / matrix product {ms[k][i] / mm:.1f}x")
    for k in ('compiled', 'eager'):
        print(f"max relative difference {k} vs reference: distances {rel(k, 0):.1e}, gradients {rel(k, 1):.1e}")
    return dict(forward_ms=ms['compiled'][0], backward_ms=ms['compiled'][1], eager_forward_ms=ms['eager'][0],
                eager_backward_ms=ms['eager'][1], ref_forward_ms=ms['ref'][0], ref_backward_ms=ms['ref'][1], matmul_ms=mm,
                ratio_forward=ratio['compiled'][0], ratio_backward=ratio['compiled'][1], compile_s=t_compile)

if __name__ == '__main__': main()

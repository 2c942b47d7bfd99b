"""Benchmark of sounding map refinement (SMR): the local random walk `uspl.components.affinity.refine` against the dense
HW x HW reference `uspl.components.affinity.dense_refine`, at the paper's setting (56x56, r=7, beta=10, t=8, 256-d features).

    python benchmarks/bench_refine.py [--threads N] [--batch 8] [--size 56] [--dim 256]

Prints the time of each, the speed ratio, the largest difference relative to max|M|, the peak memory of each,
and the median time of one slider move (`propagate` on one 56x56 map with a precomputed transition) on one thread.

Two dense references: `dense_refine` (the kit's: T^t by `torch.linalg.matrix_power`, repeated squaring, O((HW)^3))
and `dense_steps` below (independent of the kit: T built from `torch.cdist` as Eqs. 3 and 7 write it, then t
products T @ v, O(t (HW)^2)), the faster of the two. The goal (>= 30x) is judged against the faster one, at the
paper's setting and again at the CPU size's affinity width (`--width-batch 2 --width-dim 64`, same grid; issue 30).

Precision: the dense reference computes in float64; `refine` in float32 (its normal use). The difference is
measured in float64.

Peak memory: torch's CPU allocations are invisible to tracemalloc, so the script reads the process's resident-set
high-water mark (VmHWM in /proc/self/status), reset before each phase by writing 5 to /proc/self/clear_refs (Linux);
a phase's peak is VmHWM after it minus the resident set before it. Where the reset is not possible, it falls back to
deltas of resource.getrusage's ru_maxrss (then only phases that raise the process's peak show). The analytic size of
the largest tensors is printed beside it.
"""
import argparse, os, resource, statistics, time
import torch, torch.nn.functional as F
from uspl.components.affinity import refine, dense_refine, local_affinity, local_transition, propagate
from uspl.components.affinity import log_affinity, transition_from_log
from uspl.components.trimap import radius_offsets

MB = 2**20
GOAL = 30.
CLOCK = {'wall': time.perf_counter, 'cpu': time.thread_time}

def dense_steps(feats, m, radius, beta, t):
    "Independent dense reference, float64: T = D^-1 A^beta [B,HW,HW] from pairwise L1 distances (Eqs. 3, 7), then t products T @ vec(M) (Eq. 8)."
    B, C, H, W = feats.shape
    f = feats.double().flatten(2).transpose(1, 2)
    yx = torch.stack(torch.meshgrid(torch.arange(H), torch.arange(W), indexing='ij'), -1).reshape(-1, 2).double()
    near = (torch.cdist(yx, yx) ** 2 < radius ** 2).double()      # dy^2 + dx^2 < r^2
    A = torch.exp(-torch.cdist(f, f, p=1)).pow(beta) * near
    T = A / A.sum(-1, keepdim=True)
    v = m.double().flatten(2).transpose(1, 2)
    for _ in range(t): v = T @ v
    return v.transpose(1, 2).reshape(m.shape)

def mark(r): return f"goal >= {GOAL:g}x: {'met' if r >= GOAL else 'MISSED'}"

def _status_kb(key):
    try:
        for line in open('/proc/self/status'):
            if line.startswith(key + ':'): return int(line.split()[1])
    except OSError: return None

def _reset_peak() -> bool:
    try:
        with open('/proc/self/clear_refs', 'w') as f: f.write('5')
        return True
    except OSError: return False

def peak_mb(fn):
    "Run `fn()`; return (result, seconds, peak extra resident memory in MB, method)."
    if _reset_peak() and _status_kb('VmHWM') is not None:
        before = _status_kb('VmRSS'); t0 = time.perf_counter(); out = fn(); dt = time.perf_counter() - t0
        return out, dt, (_status_kb('VmHWM') - before) / 1024, 'VmHWM'
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter(); out = fn(); dt = time.perf_counter() - t0
    return out, dt, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024, 'ru_maxrss delta'

def inputs(batch, dim, size, seed):
    "Piecewise-smooth random features (affinities neither all 1 nor all underflowed) and smooth maps in [0,1]."
    g = torch.Generator().manual_seed(seed)
    f = F.interpolate(torch.randn(batch, dim, 7, 7, generator=g), size=(size, size), mode='nearest')
    f = 0.01 * F.avg_pool2d(F.pad(f, (1, 1, 1, 1), mode='replicate'), 3, stride=1) + 0.0005 * torch.randn(batch, dim, size, size, generator=g)
    m = F.interpolate(torch.rand(batch, 1, 7, 7, generator=g), size=(size, size), mode='bilinear', align_corners=False)
    return f, m

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--threads', type=int, default=torch.get_num_threads(), help='torch threads (default: all)')
    p.add_argument('--batch', type=int, default=8); p.add_argument('--size', type=int, default=56)
    p.add_argument('--dim', type=int, default=256); p.add_argument('--radius', type=int, default=7)
    p.add_argument('--beta', type=float, default=10.); p.add_argument('--t', type=int, default=8)
    p.add_argument('--repeats', type=int, default=5, help='runs of the local refine (median)')
    p.add_argument('--slider-repeats', type=int, default=50)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--width-batch', type=int, default=2, help='second setting: batch (CPU size: 2)')
    p.add_argument('--width-dim', type=int, default=64, help="second setting: channels (the CPU size's aff_dim)")
    p.add_argument('--clock', choices=tuple(CLOCK), default='wall', help="second setting's clock; 'cpu': the thread's CPU time (needs --threads 1)")
    a = p.parse_args(argv)
    if a.clock == 'cpu' and a.threads != 1: p.error('--clock cpu needs --threads 1 (it counts the calling thread only)')
    clock = CLOCK[a.clock]
    torch.set_num_threads(a.threads)
    B, N, K = a.batch, a.size * a.size, len(radius_offsets(a.radius))
    f, m = inputs(a.batch, a.dim, a.size, a.seed)
    print(f'refine vs dense reference: batch {B}, {a.size}x{a.size}, dim {a.dim}, r={a.radius} (K={K}), beta={a.beta}, '
          f't={a.t} steps; {a.threads} thread(s), torch {torch.__version__}')
    aff = local_affinity(f, a.radius).a
    print(f'mean affinity over valid non-self pairs: {(aff.sum() - aff.shape[0] * N) / ((aff > 0).sum() - aff.shape[0] * N):.3f}')

    with torch.no_grad():
        refine(f[:1, :, :8, :8], m[:1, :, :8, :8], a.radius, a.beta, a.t)  # warm-up, small enough not to raise the peak
        local, _, local_mb, how = peak_mb(lambda: refine(f, m, a.radius, a.beta, a.t))  # first large run: honest peak
        times = []
        for _ in range(a.repeats):
            t0 = time.perf_counter(); refine(f, m, a.radius, a.beta, a.t); times.append(time.perf_counter() - t0)
        t_local = statistics.median(times)
        t0 = time.perf_counter(); A = local_affinity(f, a.radius); t_aff = time.perf_counter() - t0
        t0 = time.perf_counter(); tr = local_transition(A, a.beta); t_tr = time.perf_counter() - t0
        t0 = time.perf_counter(); propagate(tr, m, a.t); t_prop = time.perf_counter() - t0
        t0 = time.perf_counter(); local64 = refine(f.double(), m.double(), a.radius, a.beta, a.t); t_local64 = time.perf_counter() - t0
        dense, t_dense, dense_mb, _ = peak_mb(lambda: dense_refine(f, m, a.radius, a.beta, a.t))
        t0 = time.perf_counter(); steps = dense_steps(f, m, a.radius, a.beta, a.t); t_steps = time.perf_counter() - t0

    rel = ((local.double() - dense).abs().max() / m.abs().max()).item()
    rel64 = ((local64 - dense).abs().max() / m.abs().max()).item()
    print(f'local refine (float32):    {t_local*1e3:9.1f} ms  median of {a.repeats} '
          f'(Eq. 3 {t_aff*1e3:.0f} ms, Eq. 7 {t_tr*1e3:.0f} ms, Eq. 8 {t_prop*1e3:.0f} ms)')
    print(f'local refine (float64):    {t_local64*1e3:9.1f} ms  one run')
    print(f'dense reference (float64): {t_dense*1e3:9.1f} ms  one run (dense_refine: matrix power)')
    print(f'dense t products (float64):{t_steps*1e3:9.1f} ms  one run (dense_steps: T @ v, t times; '
          f'max |difference| to dense_refine / max|M| {((steps - dense).abs().max() / m.abs().max()).item():.1e})')
    ratio = min(t_dense, t_steps) / t_local
    print(f'speed ratio dense / local float32: {t_dense / t_local:.1f}x (matrix power), {t_steps / t_local:.1f}x (t products) '
          f'({mark(ratio)}, against the faster); dense / local float64: {min(t_dense, t_steps) / t_local64:.1f}x')
    print(f'max |local - dense| / max|M|: float32 local {rel:.2e} (goal <= 1e-5: {"met" if rel <= 1e-5 else "NOT met"}); '
          f'float64 local {rel64:.2e}')
    print(f'peak extra resident memory ({how}): local float32 {local_mb:.0f} MB, dense {dense_mb:.0f} MB')
    print(f'analytic largest tensors: local, B*K*HW*4 B = {B*K*N*4/MB:.1f} MB each (affinities, transition, CSR values) '
          f'and B*C*HW*4 B = {B*a.dim*N*4/MB:.1f} MB per feature difference; '
          f'dense, B*(HW)^2*8 B = {B*N*N*8/MB:.0f} MB each (distances, A, A^beta, T, powers of T)')

    fw, mw = inputs(a.width_batch, a.width_dim, a.size, a.seed)
    with torch.no_grad():
        refine(fw, mw, a.radius, a.beta, a.t)
        tw_ = []
        for _ in range(a.repeats):
            t0 = clock(); lw = refine(fw, mw, a.radius, a.beta, a.t); tw_.append(clock() - t0)
        t_lw = statistics.median(tw_)
        t0 = clock(); dw = dense_refine(fw, mw, a.radius, a.beta, a.t); t_dw = clock() - t0
        t0 = clock(); sw_ = dense_steps(fw, mw, a.radius, a.beta, a.t); t_sw = clock() - t0
    ratio_w = min(t_dw, t_sw) / t_lw
    relw = max(((lw.double() - dw).abs().max() / mw.abs().max()).item(), ((lw.double() - sw_).abs().max() / mw.abs().max()).item())
    print(f'at batch {a.width_batch}, {a.width_dim} channels (the CPU size\'s affinity width), {a.size}x{a.size}: local float32 '
          f'{t_lw*1e3:.1f} ms median of {a.repeats} ({a.clock} clock, load average {os.getloadavg()[0]:.1f}), dense_refine {t_dw*1e3:.1f} ms, dense t products {t_sw*1e3:.1f} ms, one run each; '
          f'max |local - dense| / max|M| {relw:.1e}')
    print(f'speed ratio at batch {a.width_batch}, {a.width_dim} channels: {t_dw / t_lw:.1f}x (matrix power), {t_sw / t_lw:.1f}x '
          f'(t products) ({mark(ratio_w)}, against the faster)')

    torch.set_num_threads(1)
    with torch.no_grad():
        A1 = local_affinity(f[:1], a.radius)
        tr1 = local_transition(A1, a.beta)
        propagate(tr1, m[:1], a.t)
        ts = []
        for _ in range(a.slider_repeats):
            t0 = time.perf_counter(); propagate(tr1, m[:1], a.t); ts.append(time.perf_counter() - t0)
        tb = []
        for _ in range(max(5, a.slider_repeats // 5)):
            t0 = time.perf_counter(); propagate(local_transition(A1, a.beta), m[:1], a.t)
            tb.append(time.perf_counter() - t0)
        p7 = propagate(tr1, m[:1], a.t - 1); t1 = []
        for _ in range(a.slider_repeats):  # the viewer keeps the walk's powers: t -> t+1 is one step from the cached one
            t0 = time.perf_counter(); propagate(tr1, p7, 1); t1.append(time.perf_counter() - t0)
        la = log_affinity(A1)  # what the viewer caches per frame: log A and the CSR layout
        tw = []
        for _ in range(max(5, a.slider_repeats // 5)):
            t0 = time.perf_counter(); propagate(transition_from_log(la, a.beta), m[:1], a.t)
            tw.append(time.perf_counter() - t0)
    sl = statistics.median(ts)
    print(f'walk of t={a.t} steps from the coarse map (propagate, one {a.size}x{a.size} map, 1 thread): {sl*1e3:.2f} ms median of {len(ts)}')
    s1 = statistics.median(t1)
    print(f'slider move, t by one step as RefineViewer does it (one step from its cached power, 1 thread): {s1*1e3:.2f} ms median '
          f'(goal <= 10 ms: {"met" if s1 <= 0.01 else "NOT met"})')
    print(f'slider move, beta (local_transition + propagate on cached affinities, 1 thread): {statistics.median(tb)*1e3:.2f} ms median')
    sw = statistics.median(tw)
    print(f'slider move, beta as RefineViewer does it (cached log A and CSR layout: transition_from_log + propagate, 1 thread): '
          f'{sw*1e3:.2f} ms median (goal <= 10 ms: {"met" if sw <= 0.01 else "NOT met"})')
    return dict(ratio=ratio, ratio_width=ratio_w, local_ms=t_local * 1e3, local_width_ms=t_lw * 1e3, dense_steps_ms=t_steps * 1e3,
                dense_width_ms=t_dw * 1e3, dense_steps_width_ms=t_sw * 1e3, rel=rel, rel_width=relw)

if __name__ == '__main__': main()

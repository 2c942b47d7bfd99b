"""Table 3 of the USPL paper in form: parameters, FLOPs and frames/s of the three inference paths.

    python benchmarks/bench_efficiency.py                  # the paper's config: resnet50 OS16, 224x224, VGGish
    python benchmarks/bench_efficiency.py --runs 21 --batch 1 8 --threads 2
    python benchmarks/bench_efficiency.py --backbone resnet18 --audio vggish_small --size 112   # a CPU-sized config
    python benchmarks/bench_efficiency.py --device cuda   # on a GPU (the default where one is present): batch 1 and 32

Paths (each returns a sounding map at image size, from normalised images and precomputed audio features; the audio
front-end is excluded, as it is the same for all three):
- EZ-VSL: `EZVSL.predict(..., 'coarse')`: encoders + projectors + coarse map (Eq. 1), upsampled and min-max normalised;
- SMR: `USPL.predict(..., 'smr')`: the same + PMV-aff + random-walk refinement (Eqs. 3, 7, 8) on the model's own grid;
- SPS: `USPL.predict(..., 'sps')`: the features and coarse map + Eq. 9 fusion + PMV-dec + FPN decoder, sigmoid.
Every path is the registry's own inference path (`uspl.methods.base`), so the benchmark times what users run.

Timing: eval mode, `torch.no_grad`, `warmup` untimed rounds, then `runs` rounds; in each round every path is called
once in turn (interleaved, so that a change in machine load hits all paths alike). frames/s = batch / median time;
the time ratio to EZ-VSL is the median over rounds of (path time / EZ-VSL time in the same round).

Importable: `efficiency_table(cfg, batch, runs, warmup)` returns one dict per path, e.g. for a demo at a small config
(`importlib` or `sys.path` on this folder).
"""
from __future__ import annotations
import argparse, os, platform, statistics, sys
import torch, torch.nn.functional as F
from uspl.core import USPLConfig, seed_everything
from uspl.methods.base import build_method
from uspl.data.audio import front_end_for
from uspl.efficiency import count_params, count_flops, frames_per_second

GOAL = 1.3  # SPS / EZ-VSL inference-time ratio we aim at
GOAL_SMR = 2.0  # SMR / EZ-VSL
PAPER = {'EZ-VSL': (24.14, 6.46, 15.45), 'SMR': (69.64, 40.85, 4.34), 'SPS': (68.12, 38.61, 9.94)}  # Table 3: M, G, fps

def build_paths(cfg:USPLConfig, device:str='cpu') -> dict:
    "The three inference paths of Table 3 as {name: (fn(image, audio), [modules])}: the registry's own `predict`."
    ez, us = build_method(cfg, 'ezvsl').eval().to(device), build_method(cfg, 'uspl').eval().to(device)
    return {'EZ-VSL': (lambda i, a: ez.predict(i, a, 'coarse'), [ez.mmicl]),
            'SMR': (lambda i, a: us.predict(i, a, 'smr'), [us.mmicl, us.smr]),
            'SPS': (lambda i, a: us.predict(i, a, 'sps'), [us.mmicl, us.sps])}

def dummy_inputs(cfg:USPLConfig, batch:int, seed:int=0) -> tuple:
    "Random normalised images [B,3,S,S] and audio features of one S4 clip in the audio encoder's format."
    g = torch.Generator().manual_seed(seed)
    fe = front_end_for(cfg)
    a = fe(torch.randn(batch, int(cfg.s4_clip_sec * cfg.sample_rate), generator=g))
    return torch.randn(batch, 3, cfg.img_size, cfg.img_size, generator=g), torch.randn(a.shape, generator=g)

def efficiency_table(cfg:USPLConfig, # encoders, image size and SMR/SPS settings
                     batch:int=1, # frames per call
                     runs:int=11, # timed rounds (median)
                     warmup:int=2, # untimed rounds first
                     seed:int=0, # weights and inputs
                     device:str='cpu', # 'cpu' or 'cuda'
                    ) -> list[dict]:
    "One row per path: params (total, and without the audio encoder), FLOPs per frame, frames/s, time ratio to EZ-VSL."
    seed_everything(seed)
    paths, (image, audio) = build_paths(cfg, device), (x.to(device) for x in dummy_inputs(cfg, batch, seed))
    audio_enc = paths['EZ-VSL'][1][0].audio
    rows, n_audio = {}, count_params(audio_enc)
    for name, (fn, mods) in paths.items():
        rows[name] = dict(method=name, params=count_params(*mods), params_no_audio=count_params(*mods) - n_audio,
                          flops=count_flops(fn, image, audio) / batch, times=[])
    for r in range(warmup + runs):
        for name, (fn, _) in paths.items():
            t = batch / frames_per_second(fn, image, audio, runs=1, warmup=0)
            if r >= warmup: rows[name]['times'].append(t)
    ez = rows['EZ-VSL']['times']
    for row in rows.values():
        ts = row.pop('times')
        row.update(fps=batch / statistics.median(ts), batch=batch,
                   time_ratio=statistics.median(t / e for t, e in zip(ts, ez)))
    return list(rows.values())

def markdown(rows:list[dict], paper:bool=True) -> str:
    "The rows as a markdown table, with the paper's Table 3 figures beside them."
    head = "| method | params (M) | params w/o f_a (M) | GFLOPs / frame | GMACs / frame | frames/s | time ratio to EZ-VSL |"
    head += " paper: params (M) / GFLOPs / FPS |" if paper else ""
    lines = [head, '|' + '---|' * (head.count('|') - 1)]
    for r in rows:
        line = (f"| {r['method']} | {r['params']/1e6:.2f} | {r['params_no_audio']/1e6:.2f} | {r['flops']/1e9:.2f} | "
                f"{r['flops']/2e9:.2f} | {r['fps']:.2f} | {r['time_ratio']:.2f} |")
        if paper: line += " {:.2f} / {:.2f} / {:.2f} |".format(*PAPER[r['method']])
        lines.append(line)
    return '\n'.join(lines)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--backbone', default='resnet50'); p.add_argument('--audio', default='vggish')
    p.add_argument('--size', type=int, default=224); p.add_argument('--output-stride', type=int, default=16)
    p.add_argument('--batch', type=int, nargs='+', default=None, help='default: 1 8 on a CPU, 1 32 on a GPU')
    p.add_argument('--device', choices=('cpu', 'cuda'), default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--runs', type=int, default=11)
    p.add_argument('--warmup', type=int, default=2); p.add_argument('--threads', type=int, default=None)
    p.add_argument('--fpn-dim', type=int, default=None, help='SPS decoder widths; default: the config\'s')
    p.add_argument('--head-dim', type=int, default=None); p.add_argument('--aspp-dim', type=int, default=None)
    a = p.parse_args(argv)
    if a.device == 'cuda' and not torch.cuda.is_available(): p.error('--device cuda: no CUDA device here')
    a.batch = a.batch or ([1, 32] if a.device == 'cuda' else [1, 8])
    where = torch.cuda.get_device_name() if a.device == 'cuda' else f"{os.cpu_count()} CPU(s) ({platform.processor() or platform.machine()})"
    if a.threads: torch.set_num_threads(a.threads)
    cfg = USPLConfig(visual_backbone=a.backbone, audio_encoder=a.audio, img_size=a.size, output_stride=a.output_stride)
    cfg = cfg.update(**{k: v for k, v in dict(fpn_dim=a.fpn_dim, head_dim=a.head_dim, aspp_dim=a.aspp_dim).items() if v is not None})
    paper = (a.backbone, a.audio, a.size, a.output_stride) == ('resnet50', 'vggish', 224, 16)
    print(f"config: {a.backbone} OS{a.output_stride}, {a.size}x{a.size}, audio {a.audio}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), {where}, "
          f"load average {os.getloadavg()[0]:.1f}; {a.runs} timed rounds after {a.warmup}; "
          f"SPS widths fpn/head/aspp {cfg.fpn_dim}/{cfg.head_dim}/{cfg.aspp_dim}")
    for b in a.batch:
        rows = efficiency_table(cfg, b, a.runs, a.warmup, device=a.device)
        print(f"\nbatch {b}:\n" + markdown(rows, paper))
        print("FLOPs: 2 per multiply-add of matmuls and convolutions (`FlopCounterMode`); the paper's column matches "
              "multiply-adds of the visual path. SMR's count is not comparable: its sparse propagation is counted as a "
              "dense (B*HW)^2 product and its elementwise affinities not at all.")
        r = {x['method']: x for x in rows}['SPS']['time_ratio']
        print(f"SPS / EZ-VSL inference time: {r:.2f} (goal <= {GOAL}; the paper: 15.45 / 9.94 = 1.55) -> "
              f"{'met' if r <= GOAL else 'MISSED'}")
        r = {x['method']: x for x in rows}['SMR']['time_ratio']
        print(f"SMR / EZ-VSL inference time: {r:.2f} (goal <= {GOAL_SMR}; the paper: 15.45 / 4.34 = 3.56) -> "
              f"{'met' if r <= GOAL_SMR else 'MISSED'}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")

if __name__ == '__main__':
    sys.exit(main())

"""Cost curves: time and memory of one attention block of each kind (ours) against the token count.

ViT global attention (stride 16), PCPVT spatial-reduction attention (stride 4, sr 8) and Swin window attention
(stride 4, 7x7 windows), each at the stage-1 grid of images of growing size; `write_cost_curve_outputs` writes the
rows as CSV and a log-log PNG plot next to the JSON (tools/benchmark.py --cost-curve).
"""
import contextlib
import csv
import os
import statistics
import sys
from typing import Callable, Dict, List, Sequence, Tuple

import torch
import torch.nn as nn

from .measure import DTYPES, format_mb, machine_meta, peak_memory, timed

__all__ = ['attention_blocks', 'cost_curve', 'write_cost_curve_outputs']


def attention_blocks(device: torch.device, tiny: bool,
                     pe_types: Sequence = ('none',)) -> Dict[str, Tuple[nn.Module, int, int, Callable]]:
    """One block of each attention kind (ours, preset widths) with each positional encoding of `pe_types`:
    name -> (module, stride, channels, run(module, x, hw)); names are the kind, '<kind>+<pe_type>' when encodings
    other than 'none' are asked for.

    A block with an encoding runs what the backbones run for it in every forward: `prepare` (tables derived from
    parameters: resampled absolute / relative tables, mixed RoPE frequencies), `add_to_tokens`, the block with
    its `BlockPE` (bias, rotation), `after_block` (PEG); the tables are made for a 224 x 224 image.
    """
    from vitpe_mm.layers import BlockSpec, StageSpec, build_pos_encoding
    from vitpe_mm.models.cpvt import CPVTBlock
    from vitpe_mm.models.swin import SwinBlock
    from vitpe_mm.models.vit import ViTBlock
    vit_c, cpvt_c, swin_c = (32, 16, 16) if tiny else (384, 64, 96)
    vit_h, swin_h = (2, 1) if tiny else (6, 3)
    kinds = {  # name: (block, stride, channels, heads, BlockSpec)
        'vit_global': (lambda: ViTBlock(vit_c, vit_h), 16, vit_c, vit_h, BlockSpec()),
        'pcpvt_sra': (lambda: CPVTBlock(cpvt_c, 1, 8.0, 8), 4, cpvt_c, 1, BlockSpec(sr_ratio=8)),
        'swin_window': (lambda: SwinBlock(swin_c, swin_h, (7, 7), shifted=True), 4, swin_c, swin_h,
                        BlockSpec(window_size=(7, 7))),
    }
    plain = tuple(pe_types) == ('none',)
    out = {}
    for kind, (make, stride, channels, heads, spec) in kinds.items():
        for pe_type in pe_types:
            holder = nn.Module()  # the block and the encoding's modules (`rope.freqs...`), moved to the device together
            holder.block = make()
            pe = build_pos_encoding(pe_type, [StageSpec(channels, heads, (224 // stride, 224 // stride), (spec,))])
            pe.attach(holder)

            def run(m, x, hw, pe=pe):
                ctx = pe.prepare(0, hw, x)
                x = pe.add_to_tokens(x, hw, 0, ctx)
                return pe.after_block(m.block(x, hw, pe.block(ctx, 0)), hw, 0, ctx)
            out[kind if plain else f'{kind}+{pe_type}'] = (holder.to(device), stride, channels, run)
    return out


def _block_step(run: Callable, block: nn.Module, x: torch.Tensor, hw: Tuple[int, int], mode: str,
                autocast: Callable) -> Callable[[], None]:
    """One timed run of `block`: 'fwd' under no_grad, 'fwdbwd' forward and backward of the mean output."""
    if mode == 'fwd':
        def step():
            with torch.no_grad(), autocast():
                run(block, x, hw)
        return step
    xg = x.clone().requires_grad_(True)

    def step():
        with autocast():
            out = run(block, xg, hw)
        out.float().mean().backward()
    return step


def cost_curve(args) -> dict:
    """Rows (kind, image, grid, tokens, mode, times, median, peak memory) for `args.curve_sizes` and `args.modes`;
    `args` as for `vitpe_mm.bench.measure.run_benchmark` (plus curve_sizes)."""
    device = torch.device(args.device)
    meta = machine_meta(args)
    sizes = args.curve_sizes
    rows = []
    print(f'# cost curve: one block of each attention kind (ours), batch 1, {args.dtype[0]}, '
          f'{torch.get_num_threads()} threads, device {device}')
    blocks = attention_blocks(device, args.tiny, getattr(args, 'curve_pe', ('none',)))
    width = max(12, *map(len, blocks))
    print(f'{"kind":<{width}} {"image":>9} {"tokens":>7} {"mode":>6} {"ms":>9} {"MB":>8}')
    dtype = DTYPES[args.dtype[0]]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext
    for kind, (block, stride, channels, run) in blocks.items():
        for size in sizes:
            hw = (-(-size[0] // stride), -(-size[1] // stride))
            x = torch.randn(1, hw[0] * hw[1], channels, device=device)
            for mode in args.modes:
                block.train(mode == 'fwdbwd')
                step = _block_step(run, block, x, hw, mode, autocast)
                for _ in range(args.warmup):
                    step()
                times = [timed(step, device) for _ in range(args.repeats)]
                median = statistics.median(times)
                mem, method = (None, '') if args.no_memory else peak_memory(step, device)
                row = dict(kind=kind, image=list(size), grid=list(hw), tokens=hw[0] * hw[1], mode=mode,
                           median_s=median, times_s=times, peak_mem_bytes=mem)
                rows.append(row)
                print(f'{kind:<{width}} {"x".join(map(str, size)):>9} {row["tokens"]:>7} {mode:>6} {median * 1e3:9.2f} '
                      f'{format_mb(mem)}', flush=True)
                block.zero_grad(set_to_none=True)
    return dict(meta=meta, results=rows)


def write_cost_curve_outputs(data: dict, out: str) -> List[str]:
    """`cost_curve`'s rows as <out>.csv and <out>.png (when matplotlib imports); returns the paths written."""
    base = os.path.splitext(out)[0]
    written = []
    with open(base + '.csv', 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['kind', 'image_h', 'image_w', 'tokens', 'mode', 'median_ms', 'peak_mem_mb'])
        for r in data['results']:
            writer.writerow([r['kind'], *r['image'], r['tokens'], r['mode'], f'{r["median_s"] * 1e3:.3f}',
                             '' if r['peak_mem_bytes'] is None else f'{r["peak_mem_bytes"] / 2 ** 20:.2f}'])
    written.append(base + '.csv')
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except Exception as err:
        print(f'note: no plot ({err})', file=sys.stderr)
        return written
    modes = sorted({r['mode'] for r in data['results']})
    fig, axes = plt.subplots(len(modes), 2, figsize=(11, 4 * len(modes)), squeeze=False)
    for i, mode in enumerate(modes):
        for kind in sorted({r['kind'] for r in data['results']}):
            pts = [r for r in data['results'] if r['kind'] == kind and r['mode'] == mode]
            tokens = [r['tokens'] for r in pts]
            axes[i][0].plot(tokens, [r['median_s'] * 1e3 for r in pts], 'o-', label=kind)
            mems = [(r['tokens'], r['peak_mem_bytes'] / 2 ** 20) for r in pts if r['peak_mem_bytes'] is not None]
            if mems:
                axes[i][1].plot(*zip(*mems), 'o-', label=kind)
        for j, what in enumerate(('time per block (ms)', 'peak memory per block (MiB)')):
            ax = axes[i][j]
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.set_xlabel('tokens at the block (stage-1 grid of the image)')
            ax.set_ylabel(what)
            ax.set_title(f'{mode}: {what.split(" (")[0]}')
            ax.grid(True, which='both', alpha=0.3)
            ax.legend()
    fig.suptitle('Cost vs token count: ViT global attention (stride 16), PCPVT SRA (stride 4, sr 8), '
                 'Swin windows (stride 4, 7x7)', fontsize=10)
    fig.tight_layout()
    fig.savefig(base + '.png', dpi=110)
    plt.close(fig)
    written.append(base + '.png')
    return written

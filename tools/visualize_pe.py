"""Draws what a backbone's positional encodings encode, as PNGs: absolute-PE similarity maps (before and after
resampling to another grid), relative-bias tables per head and the bias the centre query sees, and the PEG's
response to a constant input (its zero-padding border signal).

    python tools/visualize_pe.py --sincos 14 --embed-dims 192 --out-dir docs/visualize        # fixed 2-D sin-cos
    python tools/visualize_pe.py work_dirs/pe_ablation/abs/iter_300.pth --config configs/demo/cpvt_fpn_demo.py \
        --cfg-options model.backbone.pe_type=abs model.backbone.img_size=128
    python tools/visualize_pe.py CKPT --model ViTPE --arch deit-s --pe-type abs               # a backbone checkpoint
    python tools/visualize_pe.py --model SwinRPB --arch tiny --pe-type rel_bias               # random initialisation

The backbone is built from the config's model.backbone (--config) or from --model/--arch/--pe-type
(--model-options for other arguments); a checkpoint (a tools/train.py checkpoint, a converted backbone checkpoint,
or a foreign format the backbone's loader knows) is loaded into it, else it keeps its random initialisation.
Every PE module found (filter with --modules REGEX) gets its figure(s) in --out-dir.
"""
import argparse
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmengine.config import DictAction  # noqa: E402


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('checkpoint', nargs='?', help='checkpoint to load (default: random initialisation)')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--config', help='config whose model.backbone is built')
    source.add_argument('--model', help='backbone type: CPVTv2, SwinRPB or ViTPE')
    source.add_argument('--sincos', type=int, nargs='+', metavar='GRID',
                        help='no model: a fixed 2-D sin-cos table for a GRID (or H W) token grid')
    parser.add_argument('--arch', help='--model arch: a preset name or a JSON dict')
    parser.add_argument('--pe-type', help='--model pe_type')
    parser.add_argument('--model-options', nargs='+', action=DictAction, default={},
                        help='other --model arguments, key=value (e.g. img_size=384 window_size=12)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='--config overrides, key=value')
    parser.add_argument('--embed-dims', type=int, default=192, help='--sincos channels (default 192)')
    parser.add_argument('--resample-factor', type=float, default=1.5,
                        help='absolute PE: also show the table resampled to this factor of its grid (default 1.5)')
    parser.add_argument('--resample-to', type=int, nargs=2, metavar=('H', 'W'),
                        help='absolute PE: resample to this grid instead of --resample-factor')
    parser.add_argument('--max-queries', type=int, default=8,
                        help='similarity mosaics show at most this many query rows / columns (default 8)')
    parser.add_argument('--grid', type=int, nargs=2, default=(14, 14), metavar=('H', 'W'),
                        help='token grid for encodings computed per input: the constant input fed to PEGs, '
                        'sin-cos tables of a model (default 14 14)')
    parser.add_argument('--modules', help='only PE modules whose name matches this regular expression')
    parser.add_argument('--out-dir', default='work_dirs/visualize_pe', help='where the PNGs go')
    args = parser.parse_args(argv)
    if args.sincos is not None and (len(args.sincos) not in (1, 2) or min(args.sincos) < 1):
        parser.error('--sincos takes a grid side or H W, positive')
    if args.sincos is not None and args.checkpoint:
        parser.error('--sincos draws a fixed table; it takes no checkpoint')
    if args.model is not None and args.arch is None:
        parser.error('--model needs --arch (a preset name or a JSON dict)')
    if args.resample_factor <= 0 or args.max_queries < 2:
        parser.error('--resample-factor must be positive and --max-queries at least 2')
    return args


def build_backbone(args: argparse.Namespace):
    """The backbone the arguments name, with the checkpoint loaded when one is given."""
    from mmengine.config import Config
    from mmengine.registry import MODELS

    import vitpe_mm  # noqa: F401  (registers the backbones)
    from vitpe_mm.checkpoint import load_pretrained
    from vitpe_mm.engine import mmengine_checkpoint_globals

    if args.config is not None:
        cfg = Config.fromfile(args.config)
        if args.cfg_options:
            cfg.merge_from_dict(args.cfg_options)
        backbone_cfg = cfg.model.backbone.to_dict()
    else:
        arch = json.loads(args.arch) if args.arch.lstrip().startswith('{') else args.arch
        backbone_cfg = dict(type=args.model, arch=arch, **dict(args.model_options))
        if args.pe_type is not None:
            backbone_cfg['pe_type'] = args.pe_type
    backbone_cfg['init_cfg'] = None
    backbone = MODELS.build(backbone_cfg)
    if args.checkpoint:
        with mmengine_checkpoint_globals():  # tools/train.py checkpoints hold a few non-tensor types
            load_pretrained(backbone, args.checkpoint, backbone.family)
    return backbone.eval()


def _grid_name(size) -> str:
    return f'{size[0]}x{size[1]}'


def draw_abs(name: str, table, grid, prefix: int, args, out_dir: Path, what: str, resample: bool = True) -> List[Path]:
    """Similarity mosaics of a table on its grid and (`resample`) resampled as the backbones resample it."""
    from vitpe_mm.analysis import (
        pos_embed_grid,
        pos_embed_similarity,
        query_positions,
        resampled_similarity,
        save_tiled_maps,
    )

    def mosaic(sim):
        rows = query_positions(sim.shape[0], args.max_queries)
        cols = query_positions(sim.shape[1], args.max_queries)
        return sim[rows][:, cols].numpy()

    new = tuple(args.resample_to) if args.resample_to else tuple(max(1, round(g * args.resample_factor))
                                                                 for g in grid)
    sim = pos_embed_similarity(pos_embed_grid(table, grid, prefix))
    written = [save_tiled_maps(mosaic(sim), out_dir / f'{name}_similarity_{_grid_name(grid)}.png',
                               f'{what}: cosine similarity of each position\'s PE with all others '
                               f'({_grid_name(grid)} grid)')]
    if resample and new != tuple(grid):
        sim_new = resampled_similarity(table, grid, new, prefix)
        written.append(save_tiled_maps(mosaic(sim_new), out_dir / f'{name}_similarity_{_grid_name(new)}.png',
                                       f'{what} resampled (bicubic) {_grid_name(grid)} -> {_grid_name(new)}'))
    return written


def main(argv: Optional[List[str]] = None) -> List[Path]:
    args = parse_args(argv)
    import torch

    from vitpe_mm.analysis import (
        centre_query_bias,
        find_pe_modules,
        peg_constant_response,
        rel_bias_table_maps,
        save_head_maps,
    )
    from vitpe_mm.layers import build_sincos_2d_pos_embed

    out_dir = Path(args.out_dir)
    written: List[Path] = []
    if args.sincos is not None:
        grid = tuple(args.sincos) * (2 // len(args.sincos))
        try:
            table = build_sincos_2d_pos_embed(grid, args.embed_dims)
        except ValueError as err:
            print(f'visualize_pe.py: error: {err}', file=sys.stderr)
            sys.exit(2)
        written += draw_abs(f'sincos_{args.embed_dims}d', table, grid, 0, args, out_dir,
                            f'2-D sin-cos PE, {args.embed_dims} channels')
    else:
        try:
            backbone = build_backbone(args)
        except (FileNotFoundError, ValueError, KeyError) as err:
            print(f'visualize_pe.py: error: {err}', file=sys.stderr)
            sys.exit(2)
        pattern = re.compile(args.modules) if args.modules else None
        found = {kind: [(n, m) for n, m in mods if pattern is None or pattern.search(n)]
                 for kind, mods in find_pe_modules(backbone).items()}
        kind_name = type(backbone).__name__
        for name, module in found['abs']:
            written += draw_abs(f'abs_{name}', module.pos_embed, module.grid_size, module.num_prefix_tokens, args,
                                out_dir, f'{kind_name} {name}')
        for name, module in found['sincos']:
            table = module(args.grid, torch.zeros(()))
            written += draw_abs(f'sincos_{name}', table, args.grid, module.num_prefix_tokens, args, out_dir,
                                f'{kind_name} {name} (fixed sin-cos, computed per grid)', resample=False)
        for name, module in found['rel_bias']:
            table = module.relative_position_bias_table
            window = module.window_size
            written.append(save_head_maps(
                rel_bias_table_maps(table, window).numpy(), out_dir / f'rel_bias_{name}_table.png',
                f'{kind_name} {name}: relative-bias table per head, row = dy + {window[0] - 1}, column = dx + '
                f'{window[1] - 1} (offset 0 at +)'))
            written.append(save_head_maps(
                centre_query_bias(table, window).numpy(), out_dir / f'rel_bias_{name}_centre_query.png',
                f'{kind_name} {name}: bias the centre query (+) adds to each key of a '
                f'{_grid_name(window)} grid'))
        for name, module in found['peg']:
            delta = peg_constant_response(module, args.grid)  # C, H, W
            h, w = args.grid
            interior = delta[:, h // 2:h // 2 + 1, w // 2:w // 2 + 1]
            maps = torch.stack([delta.mean(0), (delta - interior).norm(dim=0)]).numpy()
            written.append(save_head_maps(
                maps, out_dir / f'peg_{name}_constant_input.png',
                f'{kind_name} {name}: PEG(x) - x for a constant x on a {_grid_name(args.grid)} grid',
                cbar_label='', symmetric=False, mark_centre=False, shared_scale=False,
                titles=['mean over channels', 'L2 over channels of (value - centre value)']))
        if not written:
            kinds = {k: len(v) for k, v in find_pe_modules(backbone).items()}
            print(f'visualize_pe.py: no positional-encoding module to draw (found {kinds}'
                  f'{", --modules " + args.modules if args.modules else ""}); pe_type '
                  f'{getattr(backbone, "pe_type", "?")!r} has no learned table or PEG', file=sys.stderr)
            sys.exit(1)
    print('written:\n  ' + '\n  '.join(str(p) for p in written))
    return written


if __name__ == '__main__':
    main()

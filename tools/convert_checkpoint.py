"""Convert an official / timm / DeiT / mmseg / mmdet checkpoint into a vitpe_mm backbone checkpoint.

    python tools/convert_checkpoint.py SRC DST --model CPVTv2 --arch small
    python tools/convert_checkpoint.py timm/twins_pcpvt_small.in1k checkpoints/cpvtv2_s.pth --model CPVTv2 --arch small
    python tools/convert_checkpoint.py swin_tiny_patch4_window7_224.pth checkpoints/swin_tiny.pth \
        --model SwinRPB --arch tiny --set window_size=12
    python tools/convert_checkpoint.py deit_small.pth checkpoints/deit_small.pth --model ViTPE --arch deit-s \
        --set img_size=512

SRC is a local file, an http(s) URL or a hub id, read as init_cfg's `checkpoint=` is (vitpe_mm.checkpoint.sources);
--prefix selects the keys under a prefix (e.g. `backbone.` of a detector). The format is detected from the keys
(or named with --format); `pos_embed` tables and relative-bias tables are resampled to the model built here (its
grid / window), exactly as `init_cfg=dict(type='Pretrained')` does at training time. DST holds
{'state_dict': ..., 'meta': {...}} in our own keys and is read with weights_only=True.
An existing DST is never overwritten without --overwrite.
"""
import argparse
import ast
import os
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))

from mmengine.registry import MODELS  # noqa: E402

import vitpe_mm  # noqa: E402,F401  (registers the backbones)
from vitpe_mm.checkpoint import is_remote, load_pretrained  # noqa: E402
from vitpe_mm.models.base import PEBackbone  # noqa: E402


def _parse_set(items):
    out = {}
    for item in items or []:
        if '=' not in item:
            raise SystemExit(f'--set expects KEY=VALUE, got {item!r}')
        key, value = item.split('=', 1)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def registered_backbones():
    return sorted(name for name, cls in MODELS.module_dict.items()
                  if isinstance(cls, type) and issubclass(cls, PEBackbone) and cls is not PEBackbone)


def convert(src: str, dst: str, model_type: str, arch=None, fmt: str = 'auto', extra=None,
            allow_unexpected: bool = False, overwrite: bool = False, prefix=None) -> dict:
    choices = registered_backbones()
    if model_type not in choices:
        raise ValueError(f'--model {model_type!r} is not a vitpe_mm backbone; accepted: {", ".join(choices)}')
    if os.path.exists(dst) and not overwrite:
        raise FileExistsError(f'{dst} exists; pass --overwrite to replace it')
    cfg = dict(type=model_type, **(extra or {}))
    if arch is not None:
        cfg['arch'] = arch
    model = MODELS.build(cfg)
    report = load_pretrained(model, src, model.family, fmt, allow_unexpected, prefix)
    meta = {'source': src if is_remote(src) else os.path.abspath(src), 'source_format': report['format'],
            'model': model_type, 'model_cfg': repr(cfg), 'missing_keys': list(report['missing_keys'])}
    os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
    # write to a temporary file first so an interrupted run never leaves a truncated DST
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(dst)), suffix='.tmp')
    os.close(fd)
    try:
        torch.save({'state_dict': model.state_dict(), 'meta': meta}, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {**report, 'num_tensors': len(model.state_dict())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('src', help='checkpoint to convert (official, timm, DeiT, mmseg, mmdet or vitpe_mm keys): '
                        'a file, an http(s) URL or a hub id such as timm/twins_pcpvt_small.in1k')
    parser.add_argument('dst', help='where to write the vitpe_mm checkpoint')
    parser.add_argument('--model', required=True, help='backbone type: ViTPE, CPVTv2 or SwinRPB')
    parser.add_argument('--arch', default=None, help='preset name of the backbone (e.g. small, tiny, deit-s)')
    parser.add_argument('--format', default='auto', help='source format; auto detects it from the keys')
    parser.add_argument('--set', nargs='*', metavar='KEY=VALUE',
                        help='other backbone arguments, e.g. window_size=12 img_size=512 pe_type=abs')
    parser.add_argument('--prefix', default=None, help='keep only the keys under this prefix (e.g. backbone.)')
    parser.add_argument('--allow-unexpected', action='store_true', help='ignore keys the model does not have')
    parser.add_argument('--overwrite', action='store_true', help='replace DST if it exists')
    args = parser.parse_args(argv)
    extra = _parse_set(args.set)
    arch = extra.pop('arch', args.arch)
    try:
        report = convert(args.src, args.dst, args.model, arch, args.format, extra, args.allow_unexpected,
                         args.overwrite, args.prefix)
    except (ValueError, FileNotFoundError, FileExistsError) as err:  # CheckpointError is a ValueError
        print(f'convert_checkpoint: error: {err}', file=sys.stderr)
        return 2
    print(f'{args.src} ({report["format"]} format) -> {args.dst}: {report["num_tensors"]} tensors; '
          f'{len(report["missing_keys"])} missing (kept initialised): {", ".join(report["missing_keys"][:8])}')
    return 0


if __name__ == '__main__':
    sys.exit(main())

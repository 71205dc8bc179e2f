#!/usr/bin/env python
"""Speed and memory of the vitpe_mm backbones side by side with the reference implementations.

Each pair runs ours and a reference in the same process with the same weights: the reference is built with
random weights (every parameter perturbed, so that a mis-mapped tensor would show), and its state dict goes
through our checkpoint converters (`vitpe_mm.checkpoint.convert_state_dict`) into ours. Pairs:

    swin-mmdet     SwinRPB Swin-T (clamp_window=False)        vs mmdet SwinTransformer (Swin-T)
    swin-timm      SwinRPB Swin-T                             vs timm swin_tiny_patch4_window7_224 (strict_img_size=False)
    cpvt-mmseg     CPVTv2-S (mmseg's norms)                   vs mmseg PCPVT (Twins-PCPVT-S)
    cpvt-timm      CPVTv2-S                                   vs timm twins_pcpvt_small
    vit-timm       ViTPE DeiT-S / ViT-S                       vs timm vit_small_patch16_224 (dynamic_img_size, _pad)
    maskrcnn-swin  mmdet Mask R-CNN + FPN with SwinRPB        vs the same model with mmdet SwinTransformer
    upernet-cpvt   mmseg UperNet with CPVTv2                  vs the same model with mmseg PCPVT

Method (printed with the results and stored in the JSON `meta`):
  * outputs: eval mode, no grad; the maximum absolute difference over all returned maps (whole models: the
    neck features of `extract_feat`). fp32 pairs are expected equal to 1e-5; some pairs follow another
    convention at some sizes (timm floors the patch grid where we pad; timm's Swin rolls before padding where
    we and mmdet pad first): the row then carries a note.
  * time: `--warmup` untimed runs of each contender, then `--repeats` rounds; every round runs ours and the
    reference once each, alternating which goes first, so that load changes on a shared machine hit both;
    the median per contender is reported (CUDA is synchronised around each run). 'fwd' = eval + no_grad;
    'fwdbwd' = train mode, forward, sum of the outputs' means (whole models: the sum of the losses with
    synthetic ground truth, same seed for both), backward; gradients are released between runs.
  * memory: the peak of bytes held by PyTorch's allocator during one run, above the level at its start
    (activations, saved tensors, gradients, workspaces; weights and inputs excluded). CPU: from the allocation
    events of torch.profiler (profile_memory=True, `total_allocated` of each event); oneDNN/MKL internal
    scratch buffers are not PyTorch tensors and are not counted. CUDA: torch.cuda.max_memory_allocated().
  * FLOPs: torch.utils.flop_counter.FlopCounterMode over one run of each contender (matmuls, convolutions,
    attention kernels, including the CPU flash-attention kernels registered below); TFLOP/s = FLOPs / median
    time, and its fraction of `--peak-tflops` when given.

`--compile` runs both sides under torch.compile (inductor, static shapes: `dynamic=False`, as tools/train.py
compiles): the timed closures (model plus feature extraction or losses) are compiled, the warm-up runs (at least
2) compile, the compared outputs are those of the compiled models, FLOPs are not counted.

`--cost-curve` measures time and memory against the token count for ViT global attention, PCPVT
spatial-reduction attention and Swin window attention (one block of each, ours), and writes CSV, JSON and
a PNG plot.

Examples:
    python tools/benchmark.py --models swin-mmdet,cpvt-mmseg --sizes 512 --batch 1 --modes fwdbwd --out bench.json
    python tools/benchmark.py --quick --out /tmp/quick.json
    python tools/benchmark.py --models cpvt-mmseg --sizes 512 --modes fwdbwd --compile
    python tools/benchmark.py --cost-curve --out cost_curve.json
"""
import argparse
import contextlib
import csv
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), '..')))

PAIRS = ('swin-mmdet', 'swin-timm', 'cpvt-mmseg', 'cpvt-timm', 'vit-timm', 'maskrcnn-swin', 'upernet-cpvt')
FAMILIES = {
    'swin': ('swin-mmdet', 'swin-timm'),
    'cpvt': ('cpvt-mmseg', 'cpvt-timm'),
    'vit': ('vit-timm',),
    'maskrcnn': ('maskrcnn-swin',),
    'upernet': ('upernet-cpvt',),
    'backbones': ('swin-mmdet', 'swin-timm', 'cpvt-mmseg', 'cpvt-timm', 'vit-timm'),
    'all': PAIRS,
}
DTYPES = {'fp32': torch.float32, 'bf16': torch.bfloat16}
MODES = ('fwd', 'fwdbwd')
FP32_TOLERANCE = 1e-5

# Narrow, shallow versions with the structure of the presets (--tiny, --quick).
TINY_SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TINY_CPVT = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))
TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2)
CPVT_S = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 6, 3))


# ---------------------------------------------------------------------------------------------------------- helpers
def perturb(model: nn.Module, seed: int = 1, std: float = 0.02) -> nn.Module:
    """Random weights everywhere (biases, norms, tables), so that equal outputs mean every tensor was mapped."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g).to(p.dtype) * std)
    return model


def load_reference_weights(ours: nn.Module, ref_state: Dict[str, torch.Tensor], family: str) -> str:
    """Converts a reference state dict with our checkpoint converters and loads it into `ours`."""
    from vitpe_mm.checkpoint import convert_state_dict, load_state_dict_checked
    state, fmt = convert_state_dict({k: v.detach().clone() for k, v in ref_state.items()}, ours, family)
    load_state_dict_checked(ours, state, f'reference ({fmt})', allow_unexpected=False)
    return fmt


def set_train(model: nn.Module, mode: bool) -> None:
    """mmdet/mmseg backbones' train() returns None; don't chain it."""
    model.train(mode)


def flatten_tensors(obj) -> List[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in flatten_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in flatten_tensors(v)]
    return []


def compare_outputs(outs: Sequence[torch.Tensor], refs: Sequence[torch.Tensor]) -> Tuple[Optional[float], List,
                                                                                        Optional[float]]:
    """(max abs difference, the per-output differences, max scaled difference) of two lists of outputs.

    The scaled difference is, per output, max|o - r| / max(1, max|r|): the absolute difference for maps of
    magnitude <= 1 (the backbones' features), relative to the map's largest value above (whole models end in
    FPN / head features that sum thousands of products, where a backbone difference of 5e-6 grows with the values).
    Shape mismatches give None and a description in place of a number.
    """
    if len(outs) != len(refs):
        return None, [f'{len(outs)} outputs vs {len(refs)}'], None
    diffs, scaled = [], []
    for o, r in zip(outs, refs):
        if o.shape != r.shape:
            diffs.append(f'shape {tuple(o.shape)} vs {tuple(r.shape)}')
            continue
        r = r.float()
        diff = (o.float() - r).abs().max()
        diffs.append(diff.item())
        scaled.append((diff / r.abs().max().clamp(min=1)).item())
    if len(scaled) != len(diffs):
        return None, diffs, None
    return max(diffs), diffs, max(scaled)


class Contender:
    """One model of a pair: how to run it forward (outputs to compare) and how to get a training loss."""

    def __init__(self, name: str, module: nn.Module, forward: Callable, loss: Callable, outputs: Callable) -> None:
        self.name = name
        self.module = module
        self.forward = forward  # (batch) -> anything; timed in 'fwd'
        self.loss = loss  # (batch) -> scalar; timed with backward in 'fwdbwd'
        self.outputs = outputs  # (batch) -> list of tensors compared between the pair


def backbone_contender(name: str, module: nn.Module, maps: Callable[[nn.Module, torch.Tensor], List[torch.Tensor]]):
    def run(x):
        return maps(module, x)

    def loss(x):
        return sum(o.float().mean() for o in maps(module, x))
    return Contender(name, module, run, loss, run)


def _tuple_maps(module, x):
    return list(module(x))


# ------------------------------------------------------------------------------------------------------- the pairs
class Pair:
    """Builds ours and a reference with the same weights; `contenders(size)` may rebuild size-bound references."""

    name = ''
    family = ''
    needs = ()  # modules that must import
    min_train_batch = 1

    def __init__(self, tiny: bool, device: torch.device) -> None:
        self.tiny = tiny
        self.device = device

    def contenders(self, size: Tuple[int, int]) -> Tuple[Contender, Contender]:
        raise NotImplementedError

    def _load_and_place(self, family: str) -> None:
        """Ours takes the reference's weights through our converters; both go to the device."""
        self.fmt = load_reference_weights(self.ours, self.ref.state_dict(), family)
        self.ref.to(self.device)
        self.ours.to(self.device)

    def make_batch(self, batch: int, size: Tuple[int, int]):
        g = torch.Generator().manual_seed(0)
        return torch.randn(batch, 3, *size, generator=g).to(self.device)

    def note(self, size: Tuple[int, int]) -> str:
        return ''


class SwinMMDet(Pair):
    name, family, needs = 'swin-mmdet', 'swin', ('mmdet',)

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        from mmdet.models.backbones.swin import SwinTransformer
        from vitpe_mm.models.swin import SwinRPB
        arch = TINY_SWIN if tiny else dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
        torch.manual_seed(0)
        self.ref = perturb(SwinTransformer(**arch, drop_path_rate=0.0, out_indices=(0, 1, 2, 3)))
        self.ours = SwinRPB(arch=dict(arch), drop_path_rate=0.0, clamp_window=False)
        self._load_and_place('swin')

    def contenders(self, size):
        return (backbone_contender('ours SwinRPB', self.ours, _tuple_maps),
                backbone_contender('mmdet SwinTransformer', self.ref, _tuple_maps))


class SwinTimm(Pair):
    name, family, needs = 'swin-timm', 'swin', ('timm',)

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        from vitpe_mm.models.swin import SwinRPB
        self.kwargs = dict(embed_dim=TINY_SWIN['embed_dims'], depths=TINY_SWIN['depths'],
                           num_heads=TINY_SWIN['num_heads']) if tiny else {}
        torch.manual_seed(0)
        first = perturb(self._timm((224, 224)))
        self.state = first.state_dict()
        arch = TINY_SWIN if tiny else 'tiny'
        self.ours = SwinRPB(arch=dict(arch) if tiny else arch, drop_path_rate=0.0)
        self.fmt = load_reference_weights(self.ours, self.state, 'swin')
        self.ours.to(device)
        self._size, self._ref = None, None

    def _timm(self, size):
        import timm
        # timm's Swin fixes windows, shifts and masks at construction: one model per input size.
        return timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, strict_img_size=False,
                                 img_size=size, drop_path_rate=0.0, **self.kwargs)

    def contenders(self, size):
        if self._size != size:
            self._ref = None
            gc.collect()
            from timm.models.swin_transformer import checkpoint_filter_fn
            ref = self._timm(size)
            # timm clamps windows to small maps at construction and resamples the bias tables for them
            ref.load_state_dict(checkpoint_filter_fn(dict(self.state), ref))
            self._ref, self._size = ref.to(self.device), size

        def timm_maps(module, x):
            return [module.forward_features(x).permute(0, 3, 1, 2)]

        def ours_last(module, x):
            return [module(x)[-1]]
        return backbone_contender('ours SwinRPB', self.ours, ours_last), \
            backbone_contender('timm swin_tiny_patch4_window7_224', self._ref, timm_maps)

    def note(self, size):
        grids = [(-(-size[0] // s), -(-size[1] // s)) for s in (4, 8, 16, 32)]
        notes = []
        if any(h < 7 or w < 7 for h, w in grids):
            notes.append('a map smaller than the window: timm resamples the bias table to the clamped window, '
                         'we crop it')
        if any((h % 7 and h > 7) or (w % 7 and w > 7) for h, w in grids):
            notes.append('maps not multiples of the window: timm rolls before padding, we (as mmdet and the '
                         'official detection code) pad first, so shifted blocks differ')
        return '; '.join(notes)


def _mmseg_pcpvt(tiny):
    from mmseg.models.backbones import PCPVT
    arch = TINY_CPVT if tiny else CPVT_S
    return PCPVT(in_channels=3, embed_dims=list(arch['embed_dims']), num_heads=list(arch['num_heads']),
                 patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=list(arch['mlp_ratios']),
                 out_indices=(0, 1, 2, 3), qkv_bias=True, norm_cfg=dict(type='LN'), depths=list(arch['depths']),
                 sr_ratios=[8, 4, 2, 1], norm_after_stage=False, drop_path_rate=0.0)


class CPVTMMSeg(Pair):
    name, family, needs = 'cpvt-mmseg', 'cpvt', ('mmseg', 'mmcv.ops')

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        from vitpe_mm.models.cpvt import CPVTv2
        torch.manual_seed(0)
        self.ref = _mmseg_pcpvt(tiny)
        self.ref.init_weights()
        perturb(self.ref)
        # mmseg's Twins configs: LayerNorm eps 1e-5 everywhere, no norm after the stages.
        self.ours = CPVTv2(arch=dict(TINY_CPVT) if tiny else 'small', norm_after_stage=False,
                           norm_cfg=dict(type='LN', eps=1e-5))
        self._load_and_place('cpvt')

    def contenders(self, size):
        return (backbone_contender('ours CPVTv2', self.ours, _tuple_maps),
                backbone_contender('mmseg PCPVT', self.ref, _tuple_maps))


class CPVTTimm(Pair):
    name, family, needs = 'cpvt-timm', 'cpvt', ('timm',)

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        import timm
        from vitpe_mm.models.cpvt import CPVTv2
        torch.manual_seed(0)
        kwargs = dict(embed_dims=TINY_CPVT['embed_dims'], num_heads=TINY_CPVT['num_heads'],
                      mlp_ratios=TINY_CPVT['mlp_ratios'], depths=TINY_CPVT['depths']) if tiny else {}
        self.ref = perturb(timm.create_model('twins_pcpvt_small', pretrained=False, **kwargs))
        self.ours = CPVTv2(arch=dict(TINY_CPVT) if tiny else 'small')
        self._load_and_place('cpvt')

    def contenders(self, size):
        def timm_maps(module, x):
            # forward_intermediates: the four stage maps, the last one after the final norm (timm's features)
            return list(module.forward_intermediates(x, norm=True, intermediates_only=True))
        return (backbone_contender('ours CPVTv2', self.ours, _tuple_maps),
                backbone_contender('timm twins_pcpvt_small', self.ref, timm_maps))

    def note(self, size):
        if size[0] % 32 or size[1] % 32:
            return 'size not a multiple of 32: timm floors the patch grids, we pad'
        return ''


class ViTTimm(Pair):
    name, family, needs = 'vit-timm', 'vit', ('timm',)

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        import timm
        from vitpe_mm.models.vit import ViTPE
        torch.manual_seed(0)
        kwargs = dict(embed_dim=TINY_VIT['embed_dims'], depth=TINY_VIT['num_layers'],
                      num_heads=TINY_VIT['num_heads']) if tiny else {}
        # dynamic_img_pad: timm pads the image to patch multiples at the bottom/right, as we do
        self.ref = perturb(timm.create_model('vit_small_patch16_224', pretrained=False, dynamic_img_size=True,
                                             dynamic_img_pad=True, **kwargs))
        self.ours = ViTPE(arch=dict(TINY_VIT) if tiny else 'deit-s')
        self._load_and_place('vit')

    def contenders(self, size):
        def timm_maps(module, x):
            tokens = module.forward_features(x)[:, module.num_prefix_tokens:]
            h, w = -(-x.shape[-2] // 16), -(-x.shape[-1] // 16)
            return [tokens.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)]
        return (backbone_contender('ours ViTPE', self.ours, _tuple_maps),
                backbone_contender('timm vit_small_patch16_224', self.ref, timm_maps))


def _build_from_text(registry_module: str, text: str):
    import tempfile
    from mmengine.config import Config
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'cfg.py')
        with open(path, 'w') as f:
            f.write(text)
        cfg = Config.fromfile(path)
    if registry_module == 'mmdet':
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
    else:
        from mmseg.registry import MODELS
        from mmseg.utils import register_all_modules
    register_all_modules()
    return MODELS.build(cfg.model)


class WholeModelPair(Pair):
    """A whole toolbox model twice: with our backbone and with the toolbox's own; heads share weights."""

    toolbox = ''

    def _copy_weights(self):
        ref_state = self.ref.state_dict()
        self.fmt = load_reference_weights(
            self.ours.backbone, {k[len('backbone.'):]: v for k, v in ref_state.items() if k.startswith('backbone.')},
            self.family)
        rest = {k: v for k, v in ref_state.items() if not k.startswith('backbone.')}
        missing, unexpected = self.ours.load_state_dict(rest, strict=False)
        missing = [k for k in missing if not k.startswith('backbone.')]
        if missing or unexpected:
            raise RuntimeError(f'{self.name}: heads differ: missing {missing[:5]}, unexpected {unexpected[:5]}')

    def contenders(self, size):
        def make(name, model):
            def forward(batch):
                return model(batch['inputs'], batch['data_samples'], mode='tensor')

            def loss(batch):
                torch.manual_seed(0)  # same proposals / point sampling for both models
                losses = model(batch['inputs'], batch['data_samples'], mode='loss')
                total = 0
                for key, value in losses.items():
                    if 'loss' in key:
                        total = total + (sum(v.sum() for v in value) if isinstance(value, list) else value.sum())
                return total

            def outputs(batch):
                return flatten_tensors(model.extract_feat(batch['inputs']))
            return Contender(name, model, forward, loss, outputs)
        return make(f'{self.ours_name}', self.ours), make(f'{self.ref_name}', self.ref)


class MaskRCNNSwin(WholeModelPair):
    name, family, needs, toolbox = 'maskrcnn-swin', 'swin', ('mmdet', 'mmcv.ops'), 'mmdet'
    ours_name, ref_name = 'Mask R-CNN + SwinRPB', 'Mask R-CNN + mmdet SwinTransformer'

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        import vitpe_mm  # noqa: F401  (registers our backbones)
        arch = TINY_SWIN if tiny else dict(embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
        channels = [arch['embed_dims'] * 2 ** i for i in range(4)]
        common = dict(embed_dims=arch['embed_dims'], depths=list(arch['depths']), num_heads=list(arch['num_heads']))
        ref_backbone = dict(type='SwinTransformer', drop_path_rate=0.0, out_indices=(0, 1, 2, 3), **common)
        ours_backbone = dict(type='SwinRPB', arch=dict(embed_dims=arch['embed_dims'], depths=tuple(arch['depths']),
                                                       num_heads=tuple(arch['num_heads'])),
                             drop_path_rate=0.0, clamp_window=False)
        text = """
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
model = dict(backbone=dict(_delete_=True, **{backbone!r}), neck=dict(in_channels={channels!r}))
"""
        torch.manual_seed(0)
        self.ref = perturb(_build_from_text('mmdet', text.format(backbone=ref_backbone, channels=channels)), std=0.01)
        self.ours = _build_from_text('mmdet', text.format(backbone=ours_backbone, channels=channels))
        self._copy_weights()
        self.ref.to(device)
        self.ours.to(device)

    def make_batch(self, batch, size):
        from mmdet.testing import demo_mm_inputs
        torch.manual_seed(0)
        packed = demo_mm_inputs(batch_size=batch, image_shapes=[(3, *size)] * batch, num_items=[5] * batch,
                                num_classes=80, with_mask=True)
        data = self.ref.data_preprocessor(packed, training=True)
        data['inputs'] = data['inputs'].to(self.device)
        data['data_samples'] = [s.to(self.device) for s in data['data_samples']]
        return data


class UperNetCPVT(WholeModelPair):
    name, family, needs, toolbox = 'upernet-cpvt', 'cpvt', ('mmseg', 'mmcv.ops'), 'mmseg'
    min_train_batch = 2  # BatchNorm after the 1x1 pyramid pooling needs two images in training
    ours_name, ref_name = 'UperNet + CPVTv2', 'UperNet + mmseg PCPVT'

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        import vitpe_mm  # noqa: F401
        arch = TINY_CPVT if tiny else CPVT_S
        channels = list(arch['embed_dims'])
        ref_backbone = dict(type='PCPVT', in_channels=3, embed_dims=channels, num_heads=list(arch['num_heads']),
                            patch_sizes=[4, 2, 2, 2], strides=[4, 2, 2, 2], mlp_ratios=list(arch['mlp_ratios']),
                            out_indices=(0, 1, 2, 3), qkv_bias=True, norm_cfg=dict(type='LN'),
                            depths=list(arch['depths']), sr_ratios=[8, 4, 2, 1], norm_after_stage=False,
                            drop_path_rate=0.0)
        ours_backbone = dict(type='CPVTv2', arch={k: tuple(v) for k, v in arch.items()}, norm_after_stage=False,
                             norm_cfg=dict(type='LN', eps=1e-5), drop_path_rate=0.0)
        head = 16 if tiny else 512
        text = """
_base_ = ['mmseg::_base_/models/upernet_r50.py']
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=None,
    backbone=dict(_delete_=True, **{backbone!r}),
    decode_head=dict(in_channels={channels!r}, channels={head}, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={aux}, channels={aux_head}, num_classes=150, norm_cfg=norm_cfg))
"""
        fmt = dict(channels=channels, head=head, aux=channels[2], aux_head=16 if tiny else 256)
        torch.manual_seed(0)
        self.ref = _build_from_text('mmseg', text.format(backbone=ref_backbone, **fmt))
        self.ref.init_weights()
        perturb(self.ref, std=0.01)
        self.ours = _build_from_text('mmseg', text.format(backbone=ours_backbone, **fmt))
        self._copy_weights()
        self.ref.to(device)
        self.ours.to(device)

    def make_batch(self, batch, size):
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        g = torch.Generator().manual_seed(0)
        samples = []
        for _ in range(batch):
            meta = dict(img_shape=size, ori_shape=size, pad_shape=size, batch_input_shape=size)
            sample = SegDataSample(metainfo=meta)
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, *size), generator=g).to(self.device))
            samples.append(sample)
        return dict(inputs=torch.randn(batch, 3, *size, generator=g).to(self.device), data_samples=samples)


PAIR_CLASSES = {cls.name: cls for cls in (SwinMMDet, SwinTimm, CPVTMMSeg, CPVTTimm, ViTTimm, MaskRCNNSwin,
                                          UperNetCPVT)}


# ------------------------------------------------------------------------------------------------------ measuring
def _register_cpu_attention_flops() -> None:
    """FlopCounterMode knows the CUDA attention kernels; teach it the CPU flash kernels (same formulas)."""
    from torch.utils import flop_counter as fc
    aten = torch.ops.aten
    registry = getattr(fc, 'flop_registry', {})
    fwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu', None)
    bwd = getattr(aten, '_scaled_dot_product_flash_attention_for_cpu_backward', None)
    try:
        if fwd is not None and fwd.default not in registry:
            @fc.register_flop_formula(fwd)
            def _fwd(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
                return fc.sdpa_flop_count(query_shape, key_shape, value_shape)
        if bwd is not None and bwd.default not in registry:
            @fc.register_flop_formula(bwd)
            def _bwd(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
                return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)
    except Exception as err:  # a private API: counting is best effort
        print(f'note: CPU attention FLOPs not registered ({err})', file=sys.stderr)


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _zero_grads(module: nn.Module) -> None:
    for p in module.parameters():
        p.grad = None


def make_step(contender: Contender, mode: str, batch, dtype: torch.dtype, device: torch.device) -> Callable:
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext

    if mode == 'fwd':
        def step():
            with torch.no_grad(), autocast():
                contender.forward(batch)
    else:
        def step():
            with autocast():
                loss = contender.loss(batch)
            loss.backward()
    return step


def compiled_contender(contender: Contender) -> Contender:
    """The contender with its forward, loss and outputs under torch.compile (inductor, `dynamic=False`): what is
    timed is the whole closure, the model and the reference's own feature extraction (timm's forward_features,
    mmdet's losses). Each input size, train / eval mode and grad mode gets its own graph."""
    compiled: Dict[int, Callable] = {}

    def compile_once(fn: Callable) -> Callable:  # forward and outputs are often the same function
        if id(fn) not in compiled:
            compiled[id(fn)] = torch.compile(fn, dynamic=False)
        return compiled[id(fn)]
    return Contender(contender.name, contender.module, compile_once(contender.forward), compile_once(contender.loss),
                     compile_once(contender.outputs))


def _raise_recompile_limit(limit: int = 64) -> None:
    """One graph per (size, mode, dtype) and model: more than dynamo's default limit of 8 in a full run."""
    config = torch._dynamo.config
    for name in ('recompile_limit', 'cache_size_limit'):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), limit))


def prepare(contender: Contender, mode: str) -> None:
    set_train(contender.module, mode == 'fwdbwd')
    _zero_grads(contender.module)


def timed(step: Callable, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    step()
    _sync(device)
    return time.perf_counter() - start


@contextlib.contextmanager
def _native_stderr_muted():
    """Silences file descriptor 2 (C++ log lines) for the duration; Python exceptions still propagate."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, 'w') as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def peak_memory(step: Callable, device: torch.device) -> Tuple[Optional[int], str]:
    """Peak bytes allocated by PyTorch during `step()` above the level at its start."""
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base, 'torch.cuda.max_memory_allocated'
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        with _native_stderr_muted():  # Kineto prints 'USDT: ... profiler_start' to fd 2 at start and stop
            prof.__enter__()
        try:
            step()
        finally:
            with _native_stderr_muted():
                prof.__exit__(None, None, None)
        allocations, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
        while stack:
            node = stack.pop()
            if node.tag == _EventType.Allocation and str(node.extra_fields.device) == 'cpu':
                fields = node.extra_fields
                allocations.append((node.start_time_ns, fields.alloc_size, fields.total_allocated))
            stack.extend(node.children)
        if not allocations:
            return None, 'no allocation events'
        allocations.sort()
        base = allocations[0][2] - allocations[0][1]
        return max(a[2] for a in allocations) - base, 'torch.profiler allocation events (CPU allocator)'
    except Exception as err:  # private profiler API: report instead of failing the run
        return None, f'unavailable ({type(err).__name__}: {err})'


def count_flops(step: Callable) -> Optional[int]:
    try:
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as counter:
            step()
        return int(counter.get_total_flops())
    except Exception as err:
        print(f'note: FLOP counting failed ({type(err).__name__}: {err})', file=sys.stderr)
        return None


def run_case(pair: Pair, size: Tuple[int, int], batch_size: int, dtype_name: str, modes: Sequence[str],
             args) -> List[dict]:
    device, dtype = pair.device, DTYPES[dtype_name]
    ours, ref = pair.contenders(size)
    if args.compile:
        ours, ref = compiled_contender(ours), compiled_contender(ref)
    batch = pair.make_batch(batch_size, size)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext

    # Outputs, eval mode, no grad.
    for c in (ours, ref):
        prepare(c, 'fwd')
    with torch.no_grad(), autocast():
        ours_out, ref_out = ours.outputs(batch), ref.outputs(batch)
        diff, diffs, scaled = compare_outputs(ours_out, ref_out)
        del ours_out, ref_out
    tolerance = FP32_TOLERANCE if dtype == torch.float32 else None
    low_precision_error = None
    if dtype != torch.float32:
        # bf16: each side's mean |error| against the reference in fp32 (ours must not be less accurate)
        with torch.no_grad():
            exact = ref.outputs(batch)
            with autocast():
                low = dict(ours=ours.outputs(batch), ref=ref.outputs(batch))
            if len(exact) == len(low['ours']) == len(low['ref']):
                low_precision_error = {
                    key: max((o.float() - e.float()).abs().mean().item() for o, e in zip(outs, exact))
                    for key, outs in low.items()}
            del exact, low
    note = pair.note(size)
    rows = []
    for mode in modes:
        if mode == 'fwdbwd' and batch_size < pair.min_train_batch:
            print(f'{pair.name:<14} fwdbwd skipped: needs batch >= {pair.min_train_batch}')
            continue
        steps = {}
        for c in (ours, ref):
            prepare(c, mode)
            steps[c.name] = make_step(c, mode, batch, dtype, device)
        times: Dict[str, List[float]] = {ours.name: [], ref.name: []}
        for _ in range(args.warmup):
            for c in (ours, ref):
                steps[c.name]()
                _zero_grads(c.module)
        for r in range(args.repeats):
            order = (ours, ref) if r % 2 == 0 else (ref, ours)
            for c in order:
                times[c.name].append(timed(steps[c.name], device))
                _zero_grads(c.module)
        row = dict(pair=pair.name, size=list(size), batch=batch_size, dtype=dtype_name, device=str(device), mode=mode,
                   compiled=bool(args.compile), checkpoint_format=pair.fmt, max_abs_diff=diff, diffs=diffs,
                   max_scaled_diff=scaled, low_precision_mean_abs_error=low_precision_error, tolerance=tolerance,
                   equal=(scaled is not None and scaled <= tolerance) if tolerance is not None else None, note=note)
        if mode == 'fwdbwd':
            # the training forward may take other kernels than inference (e.g. the attention split for threads)
            with autocast():
                ours_out, ref_out = ours.outputs(batch), ref.outputs(batch)
                row['train_max_abs_diff'], _, row['train_max_scaled_diff'] = compare_outputs(ours_out, ref_out)
                del ours_out, ref_out
            if tolerance is not None and row['equal']:
                row['equal'] = (row['train_max_scaled_diff'] is not None
                                and row['train_max_scaled_diff'] <= tolerance)
        for key, c in (('ours', ours), ('ref', ref)):
            median = statistics.median(times[c.name])
            entry = dict(name=c.name, times_s=times[c.name], median_s=median, img_per_s=batch_size / median)
            if not args.no_memory:
                entry['peak_mem_bytes'], entry['mem_method'] = peak_memory(steps[c.name], device)
                _zero_grads(c.module)
            if not args.no_flops:
                entry['flops'] = count_flops(steps[c.name])
                _zero_grads(c.module)
                if entry['flops']:
                    entry['tflops'] = entry['flops'] / median / 1e12
                    if args.peak_tflops:
                        entry['peak_fraction'] = entry['tflops'] / args.peak_tflops
            row[key] = entry
        row['speedup'] = row['ref']['median_s'] / row['ours']['median_s']
        if row['ours'].get('peak_mem_bytes') and row['ref'].get('peak_mem_bytes'):
            row['mem_ratio'] = row['ours']['peak_mem_bytes'] / row['ref']['peak_mem_bytes']
        rows.append(row)
        print_row(row, flush=True)
        for c in (ours, ref):
            _zero_grads(c.module)
        gc.collect()
    return rows


# -------------------------------------------------------------------------------------------------------- output
HEADER = (f'{"pair":<14} {"size":>9} {"b":>2} {"dtype":>5} {"mode":>6} {"ours ms":>9} {"ref ms":>9} {"speedup":>7} '
          f'{"ours img/s":>10} {"ours MB":>8} {"ref MB":>8} {"mem":>5} {"TFLOP/s":>7} {"max|diff|":>9}  note')


def _mb(value: Optional[int]) -> str:
    return f'{value / 2 ** 20:8.1f}' if value is not None else f'{"-":>8}'


def print_row(row: dict, flush: bool = False) -> None:
    o, r = row['ours'], row['ref']
    values = [row['max_abs_diff'], row.get('train_max_abs_diff', row['max_abs_diff'])]
    diff = f'{max(values):.1e}' if None not in values else 'n/a'
    mem = f'{row["mem_ratio"]:5.2f}' if row.get('mem_ratio') else f'{"-":>5}'
    tflops = f'{o["tflops"]:7.3f}' if o.get('tflops') else f'{"-":>7}'
    if row['equal'] is False:
        diff += ' !'
    size = 'x'.join(map(str, row['size']))
    note = ('compiled' + (f'; {row["note"]}' if row['note'] else '')) if row.get('compiled') else row['note']
    err = row.get('low_precision_mean_abs_error')
    if err:
        note = (f'{row["dtype"]} mean|error| vs the fp32 reference: ours {err["ours"]:.2e}, ref {err["ref"]:.2e}'
                + (f'; {note}' if note else ''))
    print(f'{row["pair"]:<14} {size:>9} {row["batch"]:>2} {row["dtype"]:>5} {row["mode"]:>6} '
          f'{o["median_s"] * 1e3:9.1f} {r["median_s"] * 1e3:9.1f} {row["speedup"]:6.2f}x {o["img_per_s"]:10.2f} '
          f'{_mb(o.get("peak_mem_bytes"))} {_mb(r.get("peak_mem_bytes"))} {mem} {tflops} {diff:>9}  '
          f'{note}', flush=flush)


def machine_meta(args) -> dict:
    meta = dict(
        date=datetime.datetime.now().isoformat(timespec='seconds'), python=platform.python_version(),
        torch=torch.__version__, platform=platform.platform(), processor=platform.processor(),
        cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), device=args.device,
        argv=sys.argv[1:], repeats=args.repeats, warmup=args.warmup, compile=bool(args.compile),
    )
    try:
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        meta['cpu_model'] = names[0] if names else None
    except OSError:
        pass
    if hasattr(os, 'getloadavg'):
        meta['loadavg_start'] = os.getloadavg()
    if args.device.startswith('cuda') and torch.cuda.is_available():
        meta['gpu'] = torch.cuda.get_device_name()
    for name in ('timm', 'mmdet', 'mmseg', 'mmcv', 'mmengine'):
        try:
            meta[name] = __import__(name).__version__
        except Exception:
            meta[name] = None
    meta['method'] = dict(
        timing='median of --repeats interleaved runs (order alternating), after --warmup runs of each',
        fwd='eval mode, torch.no_grad', fwdbwd='train mode (drop path 0), sum of output means or of the losses, '
        'backward; gradients released between runs',
        memory='peak bytes held by the PyTorch allocator during one run above the level at its start: CPU from '
        'torch.profiler allocation events (total_allocated), CUDA from torch.cuda.max_memory_allocated',
        flops='torch.utils.flop_counter.FlopCounterMode over one run (CPU flash attention registered)',
        equality=f'max abs difference of the outputs in eval mode (and of the training forward for fwdbwd rows); '
                 f'equal when max|ours - ref| <= tol * max(1, max|ref|) for every output map, fp32 tol '
                 f'{FP32_TOLERANCE}')
    return meta


def parse_size(text: str) -> Tuple[int, int]:
    parts = text.lower().split('x')
    if len(parts) == 1:
        return int(parts[0]), int(parts[0])
    if len(parts) == 2:
        return int(parts[0]), int(parts[1])
    raise argparse.ArgumentTypeError(f'size {text!r} must be N or HxW')


def parse_pairs(text: str) -> List[str]:
    names = []
    for item in text.split(','):
        item = item.strip()
        if item in FAMILIES:
            names.extend(FAMILIES[item])
        elif item in PAIRS:
            names.append(item)
        else:
            raise argparse.ArgumentTypeError(f'unknown model {item!r}; accepted: {", ".join(FAMILIES)}, '
                                             f'{", ".join(PAIRS)}')
    return list(dict.fromkeys(names))


def _check_imports(needs: Sequence[str]) -> Optional[str]:
    for name in needs:
        try:
            __import__(name)
        except Exception as err:  # mmcv ops missing, etc.
            return f'{name} not importable: {type(err).__name__}: {err}'
    return None


def _quiet_openmmlab() -> None:
    import logging
    try:
        from mmengine.logging import MMLogger
        MMLogger.get_instance('mmengine', log_level='WARNING').setLevel(logging.WARNING)
    except Exception:
        pass
    logging.getLogger('mmengine').setLevel(logging.WARNING)


def benchmark(args) -> dict:
    device = torch.device(args.device)
    _quiet_openmmlab()
    _register_cpu_attention_flops()
    meta = machine_meta(args)
    results, errors = [], []
    print(f'# torch {torch.__version__}, {meta.get("cpu_model") or platform.processor()}, '
          f'{torch.get_num_threads()} threads, device {device}'
          + (f', loadavg {meta["loadavg_start"]}' if 'loadavg_start' in meta else ''))
    print(f'# speedup = ref time / ours time (>1: ours faster); mem = ours peak / ref peak; '
          f'median of {args.repeats} interleaved runs after {args.warmup} warm-up')
    print(HEADER)
    for name in args.models:
        cls = PAIR_CLASSES[name]
        missing = _check_imports(cls.needs)
        if missing:
            errors.append(dict(pair=name, error=missing))
            print(f'{name:<14} skipped: {missing}')
            continue
        try:
            pair = cls(args.tiny, device)
        except Exception as err:
            errors.append(dict(pair=name, error=f'{type(err).__name__}: {err}'))
            print(f'{name:<14} failed to build: {type(err).__name__}: {err}')
            continue
        for size in args.sizes:
            for batch in args.batch:
                if 'fwdbwd' in args.modes and batch < pair.min_train_batch:
                    errors.append(dict(pair=name, size=list(size), batch=batch, mode='fwdbwd',
                                       error=f'skipped: training needs batch >= {pair.min_train_batch}'))
                for dtype in args.dtype:
                    try:
                        results.extend(run_case(pair, size, batch, dtype, args.modes, args))
                    except Exception as err:
                        errors.append(dict(pair=name, size=list(size), batch=batch, dtype=dtype,
                                           error=f'{type(err).__name__}: {err}'))
                        print(f'{name:<14} {size} b{batch} {dtype}: {type(err).__name__}: {err}')
                    gc.collect()
        del pair
        gc.collect()
    if hasattr(os, 'getloadavg'):
        meta['loadavg_end'] = os.getloadavg()
    return dict(meta=meta, results=results, errors=errors)


# ---------------------------------------------------------------------------------------------------- cost curve
def _attention_blocks(device: torch.device, tiny: bool) -> Dict[str, Tuple[nn.Module, int, int, Callable]]:
    """One block of each attention kind (ours, preset widths): name -> (block, stride, channels, run(x, hw))."""
    from vitpe_mm.models.cpvt import CPVTBlock
    from vitpe_mm.models.swin import SwinBlock
    from vitpe_mm.models.vit import ViTBlock
    vit_c, cpvt_c, swin_c = (32, 16, 16) if tiny else (384, 64, 96)
    blocks = {
        'vit_global': (ViTBlock(vit_c, 2 if tiny else 6), 16, vit_c),
        'pcpvt_sra': (CPVTBlock(cpvt_c, 1, 8.0, 8), 4, cpvt_c),
        'swin_window': (SwinBlock(swin_c, 1 if tiny else 3, (7, 7), shifted=True), 4, swin_c),
    }
    return {k: (m.to(device), s, c, lambda m, x, hw: m(x, hw)) for k, (m, s, c) in blocks.items()}


def cost_curve(args) -> dict:
    device = torch.device(args.device)
    meta = machine_meta(args)
    sizes = args.curve_sizes
    rows = []
    print(f'# cost curve: one block of each attention kind (ours), batch 1, {args.dtype[0]}, '
          f'{torch.get_num_threads()} threads, device {device}')
    print(f'{"kind":<12} {"image":>9} {"tokens":>7} {"mode":>6} {"ms":>9} {"MB":>8}')
    dtype = DTYPES[args.dtype[0]]
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext
    for kind, (block, stride, channels, run) in _attention_blocks(device, args.tiny).items():
        for size in sizes:
            hw = (-(-size[0] // stride), -(-size[1] // stride))
            x = torch.randn(1, hw[0] * hw[1], channels, device=device)
            for mode in args.modes:
                block.train(mode == 'fwdbwd')
                if mode == 'fwd':
                    def step():
                        with torch.no_grad(), autocast():
                            run(block, x, hw)
                else:
                    xg = x.clone().requires_grad_(True)

                    def step():
                        with autocast():
                            out = run(block, xg, hw)
                        out.float().mean().backward()
                for _ in range(args.warmup):
                    step()
                times = [timed(step, device) for _ in range(args.repeats)]
                median = statistics.median(times)
                mem, method = (None, '') if args.no_memory else peak_memory(step, device)
                row = dict(kind=kind, image=list(size), grid=list(hw), tokens=hw[0] * hw[1], mode=mode,
                           median_s=median, times_s=times, peak_mem_bytes=mem)
                rows.append(row)
                print(f'{kind:<12} {"x".join(map(str, size)):>9} {row["tokens"]:>7} {mode:>6} {median * 1e3:9.2f} '
                      f'{_mb(mem)}', flush=True)
                block.zero_grad(set_to_none=True)
    return dict(meta=meta, results=rows)


def write_cost_curve_outputs(data: dict, out: str) -> List[str]:
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


# ------------------------------------------------------------------------------------------------------------ CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split('\n', 1)[1])
    parser.add_argument('--models', type=parse_pairs, default=list(PAIRS),
                        help=f'comma list of pairs ({", ".join(PAIRS)}) or families ({", ".join(FAMILIES)})')
    parser.add_argument('--sizes', type=lambda s: [parse_size(v) for v in s.split(',')],
                        default=[(224, 224), (512, 512), (800, 1333), (1024, 1024)], help='N or HxW, comma separated')
    parser.add_argument('--batch', type=lambda s: [int(v) for v in s.split(',')], default=[1])
    parser.add_argument('--dtype', type=lambda s: s.split(','), default=['fp32'], help='fp32, bf16 (autocast)')
    parser.add_argument('--modes', type=lambda s: s.split(','), default=list(MODES), help='fwd, fwdbwd')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--tiny', action='store_true', help='narrow, shallow versions of the presets')
    parser.add_argument('--quick', action='store_true',
                        help='smoke run: --tiny, 224x224 (cost curve: 64, 96), batch 1, fp32, 1 repeat, no warm-up')
    parser.add_argument('--compile', action='store_true',
                        help='both sides under torch.compile (inductor, dynamic=False); implies --warmup >= 2 and '
                        '--no-flops')
    parser.add_argument('--no-memory', action='store_true', help='skip the memory measurement')
    parser.add_argument('--no-flops', action='store_true', help='skip FLOP counting')
    parser.add_argument('--peak-tflops', type=float, default=None,
                        help="the device's peak TFLOP/s for the dtype (e.g. 989 for H100 SXM bf16 dense)")
    parser.add_argument('--cost-curve', action='store_true', help='time/memory vs token count per attention kind')
    parser.add_argument('--curve-sizes', type=lambda s: [parse_size(v) for v in s.split(',')],
                        default=[parse_size(v) for v in ('224', '320', '448', '512', '640', '800', '1024')])
    parser.add_argument('--out', default=None, help='JSON file (cost curve: also .csv and .png next to it)')
    return parser


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    warnings.filterwarnings('ignore', category=UserWarning)  # toolbox deprecation notices
    for dtype in args.dtype:
        if dtype not in DTYPES:
            raise SystemExit(f'--dtype {dtype!r}: accepted {", ".join(DTYPES)}')
    for mode in args.modes:
        if mode not in MODES:
            raise SystemExit(f'--modes {mode!r}: accepted {", ".join(MODES)}')
    if args.device.startswith('cuda') and not torch.cuda.is_available():
        raise SystemExit('--device cuda: no CUDA device available')
    if args.quick:
        args.tiny = True
        args.repeats, args.warmup = 1, 0
        if '--sizes' not in ' '.join(argv if argv is not None else sys.argv):
            args.sizes = [(224, 224)]  # every Swin map at least one window: all pairs equal
        if '--curve-sizes' not in ' '.join(argv if argv is not None else sys.argv):
            args.curve_sizes = [(64, 64), (96, 96)]
    if args.compile:
        if args.cost_curve:
            raise SystemExit('--compile applies to the pairs, not to --cost-curve')
        args.warmup = max(args.warmup, 2)  # the first run of each mode compiles, the second settles the allocator
        args.no_flops = True  # compiled kernels do not dispatch the aten ops FlopCounterMode counts
        _raise_recompile_limit()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = cost_curve(args) if args.cost_curve else benchmark(args)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(data, f, indent=1)
        written = [args.out]
        if args.cost_curve:
            written += write_cost_curve_outputs(data, args.out)
        print(f'# wrote {", ".join(written)}')
    return data


if __name__ == '__main__':
    main()

"""The benchmark's reference pairs: each of our backbones next to a reference implementation with the same weights.

A pair builds the reference with random weights (every parameter perturbed, so that a mis-mapped tensor would
show), converts its state dict with our checkpoint converters (`vitpe_mm.checkpoint.convert_state_dict`) and loads
it into ours. `Pair.contenders(size)` gives the two `Contender`s (how to run each forward, get a training loss, and
the outputs to compare) that `vitpe_mm.bench.measure.run_case` times. A new pair is a `Pair` subclass with `name`,
`group` (the `--models` family it belongs to), `family` (the checkpoint family of its converters), `needs` (modules
that must import) and `description`, added to `PAIR_CLASSES`.

The references (mmdet, mmseg, timm) are imported when a pair is built, so importing this module needs torch only.
"""
import gc
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['CPVT_S', 'FAMILIES', 'PAIRS', 'PAIR_CLASSES', 'TINY_CPVT', 'TINY_SWIN', 'TINY_VIT', 'Contender', 'Pair',
           'WholeModelPair', 'backbone_contender', 'compare_outputs', 'flatten_tensors', 'load_reference_weights',
           'perturb', 'set_train']

# Narrow, shallow versions with the structure of the presets (--tiny, --quick).
TINY_SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TINY_CPVT = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))
TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2)
CPVT_S = dict(embed_dims=(64, 128, 320, 512), num_heads=(1, 2, 5, 8), mlp_ratios=(8, 8, 4, 4), depths=(3, 4, 6, 3))


# ---------------------------------------------------------------------------------------------------------- helpers
def perturb(model: nn.Module, seed: int = 1, std: float = 0.02) -> nn.Module:
    """Adds seeded N(0, std^2) noise to every parameter (biases, norms, PE tables too), in place; returns `model`.

    Random weights everywhere, so that equal outputs of two models mean every tensor was mapped (a zero bias or a
    unit norm left by initialisation would hide a missed key). The tests use it for the same reason.
    """
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

    name = ''  # the --models name
    group = ''  # the --models family: swin, cpvt, vit, maskrcnn, upernet, ...
    family = ''  # the checkpoint family of our converters: swin, cpvt, vit
    needs: Tuple[str, ...] = ()  # modules that must import
    description = ''  # 'ours vs reference', for --help
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
    name, group, family, needs = 'swin-mmdet', 'swin', 'swin', ('mmdet',)
    description = 'SwinRPB Swin-T (clamp_window=False) vs mmdet SwinTransformer (Swin-T)'

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
    name, group, family, needs = 'swin-timm', 'swin', 'swin', ('timm',)
    description = 'SwinRPB Swin-T vs timm swin_tiny_patch4_window7_224 (strict_img_size=False)'

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
    name, group, family, needs = 'cpvt-mmseg', 'cpvt', 'cpvt', ('mmseg', 'mmcv.ops')
    description = "CPVTv2-S (mmseg's norms) vs mmseg PCPVT (Twins-PCPVT-S)"

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
    name, group, family, needs = 'cpvt-timm', 'cpvt', 'cpvt', ('timm',)
    description = 'CPVTv2-S vs timm twins_pcpvt_small'

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
    name, group, family, needs = 'vit-timm', 'vit', 'vit', ('timm',)
    description = 'ViTPE DeiT-S / ViT-S vs timm vit_small_patch16_224 (dynamic_img_size, dynamic_img_pad)'

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



class ViTRoPEMixedTimm(Pair):
    """Rotary PE (RoPE-ViT, arXiv:2403.13298): ViTPE with our `rope_*` encodings vs timm's Eva RoPE ViT, the same
    weights through the 'timm_eva' converter (layer scale folded into the projections)."""

    name, group, family, needs = 'vit-rope-timm', 'vit', 'vit', ('timm',)
    description = ("ViTPE ViT-S pe_type='rope_mixed' vs timm Eva vit_small_patch16_rope_mixed_224 (RoPE-Mixed; "
                   'dynamic_img_size, dynamic_img_pad)')
    timm_name, pe_type = 'vit_small_patch16_rope_mixed_224', 'rope_mixed'

    def __init__(self, tiny, device):
        super().__init__(tiny, device)
        import timm

        from vitpe_mm.models.vit import ViTPE
        torch.manual_seed(0)
        kwargs = dict(embed_dim=TINY_VIT['embed_dims'], depth=TINY_VIT['num_layers'],
                      num_heads=TINY_VIT['num_heads']) if tiny else {}
        self.ref = perturb(timm.create_model(self.timm_name, pretrained=False, dynamic_img_size=True,
                                             dynamic_img_pad=True, **kwargs))
        self.ours = ViTPE(arch=dict(TINY_VIT) if tiny else 'deit-s', pe_type=self.pe_type)
        self._load_and_place('vit')

    def contenders(self, size):
        def timm_maps(module, x):
            tokens = module.forward_features(x)[:, module.num_prefix_tokens:]
            h, w = -(-x.shape[-2] // 16), -(-x.shape[-1] // 16)
            return [tokens.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)]
        return (backbone_contender(f'ours ViTPE {self.pe_type}', self.ours, _tuple_maps),
                backbone_contender(f'timm {self.timm_name}', self.ref, timm_maps))


class ViTRoPEAxialTimm(ViTRoPEMixedTimm):
    name = 'vit-rope-axial-timm'
    description = ("ViTPE ViT-S pe_type='rope_axial' vs timm Eva vit_small_patch16_rope_224 (RoPE-Axial; "
                   'dynamic_img_size, dynamic_img_pad)')
    timm_name, pe_type = 'vit_small_patch16_rope_224', 'rope_axial'


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
    name, group, family, needs, toolbox = 'maskrcnn-swin', 'maskrcnn', 'swin', ('mmdet', 'mmcv.ops'), 'mmdet'
    description = 'mmdet Mask R-CNN + FPN with SwinRPB vs the same model with mmdet SwinTransformer'
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
    name, group, family, needs, toolbox = 'upernet-cpvt', 'upernet', 'cpvt', ('mmseg', 'mmcv.ops'), 'mmseg'
    description = 'mmseg UperNet with CPVTv2 vs the same model with mmseg PCPVT'
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


PAIR_CLASSES = {cls.name: cls for cls in (SwinMMDet, SwinTimm, CPVTMMSeg, CPVTTimm, ViTTimm, ViTRoPEMixedTimm,
                                          ViTRoPEAxialTimm, MaskRCNNSwin,
                                          UperNetCPVT)}


PAIRS = tuple(PAIR_CLASSES)
# --models families: each pair's group, all backbone pairs, everything
FAMILIES: Dict[str, Tuple[str, ...]] = {}
for _cls in PAIR_CLASSES.values():
    FAMILIES[_cls.group] = FAMILIES.get(_cls.group, ()) + (_cls.name,)
FAMILIES['backbones'] = tuple(n for n, c in PAIR_CLASSES.items() if not issubclass(c, WholeModelPair))
FAMILIES['all'] = PAIRS
del _cls

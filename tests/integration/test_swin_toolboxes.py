"""SwinRPB inside whole models: an mmdet Mask R-CNN + FPN and an mmseg UperNet built from the toolboxes' own bases."""

import pytest
import torch

# Swin structure (patch 4, window 7, shifted every other block, patch merging), tiny widths.
ARCH = dict(embed_dims=16, depths=[2, 2, 2, 2], num_heads=[1, 2, 2, 4])
CHANNELS = [16, 32, 64, 128]


@pytest.fixture(autouse=True)
def _mm_ready():
    """mmcv (with ops, built by tools/setup_env.sh) is needed by mmdet/mmseg models."""
    pytest.importorskip('mmcv.ops', reason='mmcv with ops is needed by mmdet/mmseg models')


def _config(tmp_path, text: str):
    from mmengine.config import Config
    path = tmp_path / 'cfg.py'
    path.write_text(text)
    return Config.fromfile(str(path))


def _total(losses):
    total = 0
    for key, value in losses.items():
        if 'loss' in key:
            total = total + (sum(v.sum() for v in value) if isinstance(value, list) else value.sum())
    return total


@pytest.mark.parametrize('pe_type, clamp_window', [('rel_bias', False), ('peg', True)])
def test_mask_rcnn_fpn_with_swin(tmp_path, pe_type, clamp_window):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    from mmdet.utils import register_all_modules
    register_all_modules()
    backbone = dict(type='SwinRPB', arch=ARCH, pe_type=pe_type, clamp_window=clamp_window, drop_path_rate=0.1)
    cfg = _config(tmp_path, f"""
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)
model = dict(backbone=dict(_delete_=True, **{backbone!r}), neck=dict(in_channels={CHANNELS!r}))
""")
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert list(model.backbone.out_channels) == CHANNELS
    torch.manual_seed(0)
    packed = demo_mm_inputs(batch_size=1, image_shapes=[(3, 100, 134)], num_items=[2], num_classes=80,
                            with_mask=True)
    data = model.data_preprocessor(packed, training=True)
    feats = model.backbone(data['inputs'])
    h, w = data['inputs'].shape[-2:]
    assert [tuple(f.shape[-2:]) for f in feats] == [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32)]
    losses = model(**data, mode='loss')
    assert {'loss_rpn_cls', 'loss_cls', 'loss_bbox', 'loss_mask'} <= set(losses)
    total = _total(losses)
    assert torch.isfinite(total)
    total.backward()
    assert model.backbone.layers[0].blocks[1].attn.qkv.weight.grad is not None
    if pe_type == 'rel_bias':
        assert model.backbone.rel_pos_bias[0][1].relative_position_bias_table.grad is not None
    else:
        assert model.backbone.pos_block[0].proj[0].weight.grad is not None


def test_upernet_with_swin(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample
    from mmseg.utils import register_all_modules
    register_all_modules()
    backbone = dict(type='SwinRPB', arch=ARCH, drop_path_rate=0.1, frozen_stages=1)
    cfg = _config(tmp_path, f"""
_base_ = ['mmseg::_base_/models/upernet_swin.py']
custom_imports = dict(imports=['vitpe_mm'], allow_failed_imports=False)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size_divisor=32),  # the Swin base leaves the padding to the dataset configs
    backbone=dict(_delete_=True, **{backbone!r}),
    decode_head=dict(in_channels={CHANNELS!r}, channels=16, num_classes=5, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels={CHANNELS[2]}, channels=16, num_classes=5, norm_cfg=norm_cfg))
""")
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.train()
    torch.manual_seed(0)
    h, w = 90, 122  # not a multiple of 32
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, h, w)))
        samples.append(sample)
    packed = dict(inputs=[torch.randint(0, 256, (3, h, w), dtype=torch.uint8) for _ in range(2)],
                  data_samples=samples)
    data = model.data_preprocessor(packed, training=True)
    losses = model(**data, mode='loss')
    assert {'decode.loss_ce', 'aux.loss_ce'} <= set(losses)
    total = _total(losses)
    assert torch.isfinite(total)
    total.backward()
    # frozen_stages=1: patch embedding and stage 0 get no gradient; stage 1 does
    assert model.backbone.patch_embed.proj.weight.grad is None
    assert model.backbone.layers[0].blocks[0].attn.qkv.weight.grad is None
    assert model.backbone.layers[1].blocks[0].attn.qkv.weight.grad is not None

    model.eval()
    with torch.no_grad():
        preds = model(**model.data_preprocessor(packed, training=False), mode='predict')
    assert preds[0].pred_sem_seg.data.shape == (1, h, w)

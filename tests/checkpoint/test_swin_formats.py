"""Swin checkpoint formats: official, timm, mmdet/mmseg -> SwinRPB, on tiny checkpoints written here."""
import re

import pytest
import torch
import torch.nn.functional as F

from vitpe_mm.checkpoint import CheckpointError, convert_state_dict, detect_format
from vitpe_mm.checkpoint.swin import _unfold_to_official
from vitpe_mm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table
from vitpe_mm.models.swin import SwinRPB

from conftest import perturb

TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TIMM_TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))


@pytest.fixture(scope='module')
def timm_state():
    """A timm 1.0 Swin state dict (tiny arch, random weights, with its classifier head)."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = perturb(timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, num_classes=10, **TIMM_TINY),
                  std=0.05)
    return {k: v.clone() for k, v in ref.eval().state_dict().items()}, ref


def _official_from_timm(state):
    """The Microsoft release layout: downsample at the end of stage i, `head`, saved index/mask buffers."""
    out = {}
    for k, v in state.items():
        k = re.sub(r'^layers\.(\d+)\.downsample\.', lambda m: f'layers.{int(m.group(1)) - 1}.downsample.', k)
        out[k.replace('head.fc.', 'head.')] = v
        if k.endswith('attn.relative_position_bias_table'):
            out[k.replace('relative_position_bias_table', 'relative_position_index')] = torch.zeros(49, 49).long()
            block = int(re.search(r'blocks\.(\d+)', k).group(1))
            if block % 2:
                out[k.replace('attn.relative_position_bias_table', 'attn_mask')] = torch.zeros(64, 49, 49)
    return out


def _save(obj, tmp_path, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _load(obj, tmp_path, name='ckpt.pth', **kwargs) -> SwinRPB:
    kwargs.setdefault('arch', TINY)
    model = SwinRPB(init_cfg=dict(type='Pretrained', checkpoint=_save(obj, tmp_path, name), **kwargs.pop('cfg', {})),
                    drop_path_rate=0.0, **kwargs)
    model.init_weights()
    return model.eval()


def _model(**kwargs) -> SwinRPB:
    kwargs.setdefault('arch', TINY)
    return SwinRPB(**kwargs)


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], atol=0, rtol=0, msg=k)


# ---------------------------------------------------------------------------------------------------------------
# Detection
# ---------------------------------------------------------------------------------------------------------------

def test_detects_timm_official_and_own_keys(timm_state):
    state, _ = timm_state
    assert detect_format(state, 'swin') == 'timm'
    assert detect_format(_official_from_timm(state), 'swin') == 'official'
    own = _model().state_dict()
    assert convert_state_dict(own, _model(), 'swin')[1] == 'vitpe_mm'


def test_detects_mmdet_keys():
    state = {'patch_embed.projection.weight': torch.zeros(16, 3, 4, 4),
             'stages.0.blocks.0.attn.w_msa.relative_position_bias_table': torch.zeros(169, 1),
             'stages.0.blocks.0.ffn.layers.0.0.weight': torch.zeros(64, 16)}
    assert detect_format(state, 'swin') == 'mmdet'


def test_swin_v2_and_unknown_keys_are_not_recognised():
    v2 = {'layers.0.blocks.0.attn.logit_scale': torch.zeros(1, 1, 1),
          'layers.0.blocks.0.attn.cpb_mlp.0.weight': torch.zeros(512, 2),
          'layers.1.downsample.reduction.weight': torch.zeros(32, 64)}
    with pytest.raises(CheckpointError, match='layers.0.blocks.0.attn.cpb_mlp.0.weight'):
        detect_format(v2, 'swin')
    with pytest.raises(CheckpointError, match='Known formats: timm, official, mmdet'):
        detect_format({'encoder.blocks.0.weight': torch.zeros(1)}, 'swin')


# ---------------------------------------------------------------------------------------------------------------
# timm / official
# ---------------------------------------------------------------------------------------------------------------

def test_timm_and_official_load_the_same_weights(timm_state, tmp_path):
    state, ref = timm_state
    from_timm = _load(state, tmp_path, 'timm.pth')
    from_official = _load({'model': _official_from_timm(state)}, tmp_path, 'official.pth')
    _assert_same_state(from_timm, from_official)
    # the merging weights moved a stage back; the classifier's final norm is our last output norm
    torch.testing.assert_close(from_timm.layers[0].downsample.reduction.weight,
                               state['layers.1.downsample.reduction.weight'])
    torch.testing.assert_close(from_timm.norm3.weight, state['norm.weight'])
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(from_official(x)[-1], ref.forward_features(x).permute(0, 3, 1, 2),
                                   atol=1e-5, rtol=0)


def test_official_detection_release_with_output_norms(timm_state, tmp_path):
    """Swin-Transformer-Object-Detection: official block keys, `norm{i}` output norms, a detector around them."""
    state, _ = timm_state
    backbone = {k: v for k, v in _official_from_timm(state).items() if not k.startswith(('head', 'norm.'))}
    for i, c in enumerate((16, 32, 64, 128)):
        backbone[f'norm{i}.weight'], backbone[f'norm{i}.bias'] = torch.randn(c), torch.randn(c)
    detector = {f'backbone.{k}': v for k, v in backbone.items()}
    detector['neck.fpn_convs.0.conv.weight'] = torch.zeros(1)
    model = _load({'state_dict': detector, 'meta': {}}, tmp_path)
    for i in range(4):
        torch.testing.assert_close(getattr(model, f'norm{i}').weight, backbone[f'norm{i}.weight'])
    torch.testing.assert_close(model.rel_pos_bias[1][1].relative_position_bias_table,
                               backbone['layers.1.blocks.1.attn.relative_position_bias_table'])


def test_official_converter_drops_heads_and_buffers(timm_state):
    state, _ = timm_state
    converted, fmt = convert_state_dict(_official_from_timm(state), _model(), 'swin')
    assert fmt == 'official'
    assert not [k for k in converted if k.startswith('head') or 'attn_mask' in k or 'relative_position_index' in k]
    assert set(converted) <= set(_model().state_dict())


def test_fewer_out_indices_drop_unbuilt_stages_and_final_norm(timm_state, tmp_path):
    state, _ = timm_state
    model = _load(state, tmp_path, out_indices=(0, 1, 2))
    assert len(model.layers) == 3 and model.layers[2].downsample is None
    torch.testing.assert_close(model.layers[2].blocks[1].attn.qkv.weight, state['layers.2.blocks.1.attn.qkv.weight'])


def test_checkpoint_from_another_window_is_resampled(timm_state, tmp_path):
    state, _ = timm_state
    model = _load(_official_from_timm(state), tmp_path, window_size=12)
    key = 'layers.2.blocks.0.attn.relative_position_bias_table'
    table = model.rel_pos_bias[2][0].relative_position_bias_table
    assert table.shape == (23 * 23, 2)
    torch.testing.assert_close(table, resize_rel_pos_bias_table(state[key], 12))


def test_absolute_pe_from_another_grid_is_resampled(tmp_path):
    state = _model(pe_type='abs').state_dict()  # pretrain 224: 56 x 56 table
    official = {('absolute_pos_embed' if k == 'pos_embed.0.pos_embed' else k): v for k, v in state.items()}
    assert 'absolute_pos_embed' in official
    model = _load(official, tmp_path, pe_type='abs', pretrain_img_size=384)
    assert model.pos_embed[0].pos_embed.shape == (1, 96 * 96, 16)
    torch.testing.assert_close(model.pos_embed[0].pos_embed,
                               resample_abs_pos_embed(official['absolute_pos_embed'], (96, 96), num_prefix_tokens=0))


def test_pe_mismatch_is_an_error_unless_allowed(timm_state, tmp_path):
    """An official checkpoint has bias tables; a pe_type='abs' model has none: leftover keys are named."""
    state, _ = timm_state
    with pytest.raises(CheckpointError, match='relative_position_bias_table'):
        _load(state, tmp_path, pe_type='abs')
    model = _load(state, tmp_path, pe_type='abs', cfg=dict(allow_unexpected=True))
    torch.testing.assert_close(model.layers[0].blocks[0].attn.qkv.weight, state['layers.0.blocks.0.attn.qkv.weight'])


def test_wrong_shapes_name_the_keys(timm_state, tmp_path):
    state, _ = timm_state
    with pytest.raises(CheckpointError, match=r'patch_embed.proj.weight: checkpoint \(16, 3, 4, 4\) vs model'):
        _load(state, tmp_path, arch=dict(embed_dims=32, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)))


def test_deeper_checkpoint_names_leftover_keys(timm_state, tmp_path):
    state, _ = timm_state
    with pytest.raises(CheckpointError, match='layers.0.blocks.1'):
        _load(state, tmp_path, arch=dict(embed_dims=16, depths=(1, 2, 2, 2), num_heads=(1, 2, 2, 4)))


def test_unknown_format_name_lists_accepted(timm_state, tmp_path):
    state, _ = timm_state
    with pytest.raises(ValueError, match='timm, official, mmdet, mmseg'):
        _load(state, tmp_path, cfg=dict(format='swinv2'))


# ---------------------------------------------------------------------------------------------------------------
# mmdet / mmseg (nn.Unfold channel order in patch merging)
# ---------------------------------------------------------------------------------------------------------------

def test_unfold_order_is_mapped_back():
    """A reduction laid out for nn.Unfold's (C, kh, kw) features, mapped back, acts on [x0, x1, x2, x3]."""
    torch.manual_seed(0)
    c, out = 5, 7
    weight_unfold = torch.randn(out, 4 * c)
    x = torch.randn(2, c, 6, 8)
    unfold_feats = F.unfold(x, kernel_size=2, stride=2).transpose(1, 2)  # B, L, C*4 (c, kh, kw)
    xh = x.permute(0, 2, 3, 1)
    x0, x1, x2, x3 = xh[:, 0::2, 0::2], xh[:, 1::2, 0::2], xh[:, 0::2, 1::2], xh[:, 1::2, 1::2]
    official_feats = torch.cat([x0, x1, x2, x3], -1).reshape(2, -1, 4 * c)
    torch.testing.assert_close(official_feats @ _unfold_to_official(weight_unfold).T, unfold_feats @ weight_unfold.T)
    torch.testing.assert_close(_unfold_to_official(unfold_feats), official_feats)  # the same map for a norm's 4C
    norm_unfold = torch.randn(4 * c)
    torch.testing.assert_close(official_feats * _unfold_to_official(norm_unfold),
                               _unfold_to_official(unfold_feats * norm_unfold))


def test_official_to_mmdet_converter_round_trips(timm_state, tmp_path):
    """mmdet's own `swin_converter` (official -> mmdet, detector checkpoint with `backbone.`), read back as mmdet."""
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    from mmdet.models.backbones.swin import swin_converter
    state, _ = timm_state
    official = _official_from_timm(state)
    mmdet_state = swin_converter(official)
    mmdet_state['neck.lateral_convs.0.conv.weight'] = torch.zeros(1)  # a detector checkpoint holds more
    assert detect_format({k[len('backbone.'):]: v for k, v in mmdet_state.items() if k.startswith('backbone.')},
                         'swin') == 'mmdet'
    from_mmdet = _load({'state_dict': dict(mmdet_state), 'meta': {}}, tmp_path, 'mmdet.pth')
    from_official = _load(official, tmp_path, 'official.pth')
    _assert_same_state(from_mmdet, from_official)  # mmdet's converter keeps `norm`: it is our norm3 again


def test_mmseg_format_can_be_named(tmp_path):
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    from mmseg.models.backbones.swin import SwinTransformer
    torch.manual_seed(0)
    ref = perturb(SwinTransformer(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4), drop_path_rate=0.0),
                  std=0.05)
    ref.eval()  # mmseg's train() returns None
    model = _load(ref.state_dict(), tmp_path, cfg=dict(format='mmseg'))
    x = torch.randn(1, 3, 256, 320)  # every map larger than the window
    with torch.no_grad():
        for out, exp in zip(model(x), ref(x)):
            torch.testing.assert_close(out, exp, atol=1e-5, rtol=0)


@pytest.mark.parametrize('rows, heads, why', [(13 * 11, 1, 'square window'), (10 * 10, 1, 'square window'),
                                              (13 * 13, 3, 'one column per head')])
def test_bias_table_that_cannot_be_resampled_names_key_and_file(timm_state, tmp_path, rows, heads, why):
    """A table of a non-square (or even) size, or another head count: the error names the key, the file, why."""
    state, _ = timm_state
    key = 'layers.0.blocks.1.attn.relative_position_bias_table'
    state = dict(state, **{key: torch.zeros(rows, heads)})
    ours = re.escape('rel_pos_bias.0.1.relative_position_bias_table')
    with pytest.raises(CheckpointError, match=rf'(?s)odd_table\.pth.*{ours}.*{why}'):
        _load(state, tmp_path, 'odd_table.pth')

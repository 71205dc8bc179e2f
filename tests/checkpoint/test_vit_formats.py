"""ViT checkpoint formats: timm / official DeiT (plain, distilled, no_embed_class), mmseg; PE fitting; errors."""
import logging

import pytest
import torch
from timm.models.deit import VisionTransformerDistilled
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from vitpe_mm.checkpoint import CheckpointError, convert_state_dict, detect_format
from vitpe_mm.layers import resample_abs_pos_embed
from vitpe_mm.models.vit import ViTPE

from conftest import perturb

ARCH = dict(embed_dims=32, num_layers=2, num_heads=2)
TIMM_TINY = dict(patch_size=16, embed_dim=32, depth=2, num_heads=2, num_classes=10, dynamic_img_size=True)


def _timm(cls=VisionTransformer, seed=0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = cls(**dict(TIMM_TINY, **kwargs))
    perturb(model, seed, std=0.05)
    return model.eval()


def _load(path, fmt='auto', **kwargs) -> ViTPE:
    init_cfg = dict(type='Pretrained', checkpoint=str(path))
    if fmt != 'auto':
        init_cfg['format'] = fmt
    model = ViTPE(ARCH, init_cfg=init_cfg, **kwargs)
    model.init_weights()
    return model.eval()


def _timm_features(ref: torch.nn.Module, x: torch.Tensor, num_prefix: int = 1) -> torch.Tensor:
    tokens = ref.forward_features(x)[:, num_prefix:]
    b, _, c = tokens.shape
    return tokens.reshape(b, x.shape[2] // 16, x.shape[3] // 16, c).permute(0, 3, 1, 2)


def test_timm_checkpoint_with_head_loads_exactly(tmp_path):
    ref = _timm(img_size=64)
    path = tmp_path / 'timm.pth'
    torch.save(ref.state_dict(), path)
    assert detect_format(ref.state_dict(), 'vit') == 'timm'
    ours = _load(path, img_size=64)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _timm_features(ref, x), atol=1e-5, rtol=0)


def test_official_deit_wrapped_in_model(tmp_path):
    ref = _timm(img_size=64)
    path = tmp_path / 'deit.pth'
    torch.save({'model': ref.state_dict(), 'epoch': torch.tensor(300)}, path)
    ours = _load(path, img_size=64)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _timm_features(ref, x), atol=1e-5, rtol=0)


def test_distilled_deit_drops_dist_token_with_a_note(tmp_path, caplog):
    ref = _timm(VisionTransformerDistilled, img_size=64)
    state = ref.state_dict()
    assert 'dist_token' in state and 'head_dist.weight' in state and state['pos_embed'].shape[1] == 2 + 16
    path = tmp_path / 'deit_distilled.pth'
    torch.save({'model': state}, path)
    with caplog.at_level(logging.WARNING, logger='vitpe_mm'):
        ours = _load(path, img_size=64)
    assert 'dist_token' in caplog.text
    table = ours.pos_embed[0].pos_embed
    assert torch.equal(table[:, :1], state['pos_embed'][:, :1])  # cls row kept
    assert torch.equal(table[:, 1:], state['pos_embed'][:, 2:])  # dist row dropped
    # the same as a plain DeiT holding the distilled weights without the dist token
    plain = {k: v for k, v in state.items() if k not in ('dist_token', 'head_dist.weight', 'head_dist.bias')}
    plain['pos_embed'] = torch.cat([state['pos_embed'][:, :1], state['pos_embed'][:, 2:]], 1)
    torch.save(plain, tmp_path / 'plain.pth')
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _load(tmp_path / 'plain.pth', img_size=64)(x)[0], atol=0, rtol=0)


def test_distilled_deit_keeps_dist_token_when_the_model_has_one(tmp_path):
    """with_dist_token=True: dist_token and both prefix PE rows kept, features equal to timm's distilled model,
    also from a table made for another grid (resampled on load with the two prefix rows untouched)."""
    ref = _timm(VisionTransformerDistilled, img_size=64)
    state = ref.state_dict()
    torch.save({'model': state}, tmp_path / 'deit_distilled.pth')
    ours = _load(tmp_path / 'deit_distilled.pth', img_size=64, with_dist_token=True)
    assert torch.equal(ours.dist_token, state['dist_token'])
    assert torch.equal(ours.pos_embed[0].pos_embed, state['pos_embed'])
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _timm_features(ref, x, num_prefix=2), atol=1e-5, rtol=0)

    ours96 = _load(tmp_path / 'deit_distilled.pth', img_size=96, with_dist_token=True)  # 4x4 table -> 6x6 grid
    table = ours96.pos_embed[0].pos_embed
    assert table.shape == (1, 2 + 36, 32) and torch.equal(table[:, :2], state['pos_embed'][:, :2])
    torch.save(ours96.state_dict(), tmp_path / 'ours96.pth')  # our own checkpoint with two prefix rows
    again = _load(tmp_path / 'ours96.pth', img_size=96, with_dist_token=True)
    assert torch.equal(again.pos_embed[0].pos_embed, table) and torch.equal(again.dist_token, ours96.dist_token)


def test_plain_deit_into_a_model_with_dist_token(tmp_path, caplog):
    """A checkpoint without a dist token: the token keeps its initialisation (logged missing), its PE row is zero
    (logged), the cls and grid rows are the checkpoint's."""
    ref = _timm(img_size=64)
    state = ref.state_dict()
    torch.save(state, tmp_path / 'deit.pth')
    with caplog.at_level(logging.WARNING, logger='vitpe_mm'):
        ours = _load(tmp_path / 'deit.pth', img_size=64, with_dist_token=True)
    assert 'dist_token' in caplog.text and 'zero row' in caplog.text
    table = ours.pos_embed[0].pos_embed
    assert torch.equal(table[:, :1], state['pos_embed'][:, :1]) and not table[:, 1].any()
    assert torch.equal(table[:, 2:], state['pos_embed'][:, 1:])


def test_pos_embed_from_another_grid_matches_timm_filter(tmp_path):
    """A 6x6 (96 px) table loaded into a 4x4 (64 px) model: resampled as timm's checkpoint_filter_fn does."""
    ref96 = _timm(img_size=96)
    torch.save(ref96.state_dict(), tmp_path / 'timm96.pth')
    ours = _load(tmp_path / 'timm96.pth', img_size=64)
    assert ours.pos_embed[0].pos_embed.shape == (1, 17, 32)
    ref64 = VisionTransformer(**dict(TIMM_TINY, img_size=64)).eval()
    ref64.load_state_dict(checkpoint_filter_fn(ref96.state_dict(), ref64))
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _timm_features(ref64, x), atol=1e-5, rtol=0)


def test_no_embed_class_table_gets_a_zero_cls_row(tmp_path):
    """deit3-style tables hold grid rows only; the cls token then gets no PE, as in timm."""
    ref = _timm(img_size=64, no_embed_class=True)
    assert ref.state_dict()['pos_embed'].shape == (1, 16, 32)
    torch.save(ref.state_dict(), tmp_path / 'noembed.pth')
    ours = _load(tmp_path / 'noembed.pth', img_size=64)
    assert ours.pos_embed[0].pos_embed[:, 0].abs().sum() == 0
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], _timm_features(ref, x), atol=1e-5, rtol=0)


def test_cls_token_and_its_row_dropped_for_vitdet_models(tmp_path, caplog):
    ref = _timm(img_size=64)
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    with caplog.at_level(logging.WARNING, logger='vitpe_mm'):
        ours = _load(tmp_path / 'timm.pth', img_size=64, with_cls_token=False, window_size=2,
                     global_attn_indexes=(1,), out_type='sfp')
    assert 'cls_token dropped' in caplog.text
    assert torch.equal(ours.pos_embed[0].pos_embed, ref.pos_embed[:, 1:])
    assert torch.equal(ours.blocks[1].attn.qkv.weight, ref.blocks[1].attn.qkv.weight)


@pytest.mark.parametrize('pe_type', ['rel_bias', 'peg', 'none', 'sincos'])
def test_pos_embed_dropped_for_pe_types_without_a_table(tmp_path, caplog, pe_type):
    ref = _timm(img_size=64)
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    with caplog.at_level(logging.WARNING, logger='vitpe_mm'):
        ours = _load(tmp_path / 'timm.pth', img_size=64, pe_type=pe_type)
    assert 'pos_embed dropped' in caplog.text
    assert torch.equal(ours.blocks[0].mlp.fc1.weight, ref.blocks[0].mlp.fc1.weight)


def test_final_norm_dropped_when_disabled(tmp_path, caplog):
    ref = _timm(img_size=64)
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    with caplog.at_level(logging.WARNING, logger='vitpe_mm'):
        ours = _load(tmp_path / 'timm.pth', img_size=64, final_norm=False)
    assert ours.norm is None and 'final norm dropped' in caplog.text


def test_own_checkpoint_round_trip_with_rel_bias_tables_for_another_window(tmp_path):
    src = ViTPE(ARCH, pe_type='rel_bias', with_cls_token=False, window_size=3, global_attn_indexes=(1,),
                out_type='sfp')
    torch.save(src.state_dict(), tmp_path / 'own.pth')
    same = ViTPE(ARCH, pe_type='rel_bias', with_cls_token=False, window_size=3, global_attn_indexes=(1,),
                 out_type='sfp', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'own.pth')))
    same.init_weights()
    x = torch.randn(1, 3, 70, 90)
    with torch.no_grad():
        for a, b in zip(same.eval()(x), src.eval()(x)):
            assert torch.equal(a, b)
    # windowed tables made for window 3 load into window 5 (resampled); the global table is unchanged
    wider = ViTPE(ARCH, pe_type='rel_bias', with_cls_token=False, window_size=5, global_attn_indexes=(1,),
                  out_type='sfp', init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'own.pth')))
    wider.init_weights()
    assert wider.rel_pos_bias[0][0].relative_position_bias_table.shape == (81, 2)
    assert torch.equal(wider.rel_pos_bias[0][1].relative_position_bias_table,
                       src.rel_pos_bias[0][1].relative_position_bias_table)


def test_mmseg_checkpoint_keys_and_zero_patch_bias():
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed for mmseg references')
    from mmseg.models.backbones.vit import VisionTransformer as MMSegViT
    ref = MMSegViT(img_size=64, embed_dims=32, num_layers=2, num_heads=2, final_norm=True)
    state = ref.state_dict()
    assert 'patch_embed.projection.bias' not in state  # mmseg default patch_bias=False
    assert detect_format(state, 'vit') == 'mmseg'
    model = ViTPE(ARCH, img_size=64)
    converted, fmt = convert_state_dict(state, model, 'vit')
    assert fmt == 'mmseg'
    assert set(converted) == set(model.state_dict())
    assert converted['patch_embed.proj.bias'].abs().sum() == 0
    assert torch.equal(converted['blocks.1.attn.qkv.weight'], state['layers.1.attn.attn.in_proj_weight'])
    assert torch.equal(converted['blocks.0.mlp.fc2.bias'], state['layers.0.ffn.layers.1.bias'])
    assert torch.equal(converted['norm.weight'], state['ln1.weight'])


def test_explicit_format_and_unknown_format_name(tmp_path):
    ref = _timm(img_size=64)
    torch.save(ref.state_dict(), tmp_path / 'timm.pth')
    _load(tmp_path / 'timm.pth', fmt='timm', img_size=64)
    with pytest.raises(ValueError, match='accepted: auto'):
        _load(tmp_path / 'timm.pth', fmt='caffe', img_size=64)


def test_unrecognisable_checkpoint_names_keys(tmp_path):
    torch.save({'encoder.conv.weight': torch.zeros(3), 'encoder.fc.bias': torch.zeros(2)}, tmp_path / 'x.pth')
    with pytest.raises(CheckpointError, match='encoder.conv.weight'):
        _load(tmp_path / 'x.pth')


def test_wrong_shapes_name_keys(tmp_path):
    ref = _timm(img_size=64, embed_dim=48, num_heads=2)
    torch.save(ref.state_dict(), tmp_path / 'wide.pth')
    with pytest.raises(CheckpointError, match=r'blocks\.0\.attn\.qkv\.weight: checkpoint \(144, 48\)'):
        _load(tmp_path / 'wide.pth', img_size=64)


def test_unsupported_variant_keys_are_an_error(tmp_path):
    """Layer scale (deit3 `ls1.gamma`) has no place in ViTPE: loading without it would change the function."""
    ref = _timm(img_size=64, init_values=0.1)
    torch.save(ref.state_dict(), tmp_path / 'ls.pth')
    with pytest.raises(CheckpointError, match=r'blocks\.0\.ls1\.gamma'):
        _load(tmp_path / 'ls.pth', img_size=64)
    with pytest.raises(CheckpointError, match=r'blocks\.2\.'):  # a deeper checkpoint than the arch
        deep = _timm(img_size=64, depth=3)
        torch.save(deep.state_dict(), tmp_path / 'deep.pth')
        _load(tmp_path / 'deep.pth', img_size=64)


def test_converted_deit_checkpoint_loads_into_a_vitdet_model(tmp_path):
    """tools/convert_checkpoint.py writes a default ViTPE (cls token); windowed models drop it on load."""
    src = ViTPE(ARCH, img_size=64)
    torch.save(src.state_dict(), tmp_path / 'vitpe.pth')
    ours = _load(tmp_path / 'vitpe.pth', img_size=96, with_cls_token=False, window_size=2, global_attn_indexes=(1,),
                 out_type='sfp')
    expected = resample_abs_pos_embed(src.pos_embed[0].pos_embed[:, 1:], (6, 6), (4, 4), 0)
    torch.testing.assert_close(ours.pos_embed[0].pos_embed, expected)
    assert torch.equal(ours.blocks[0].attn.proj.weight, src.blocks[0].attn.proj.weight)

"""The toolbox argument names (vitpe_mm.models.toolbox_args): translation, toolbox-style defaults, refusals with
what is accepted, the same kwargs giving the same network as the toolbox backbone (tiny sizes), and the argument
bugs of issue 11."""
import inspect

import pytest
import torch

from vitpe_mm.models import CPVTv2, SwinRPB, ViTPE
from vitpe_mm.models.toolbox_args import CPVT_ARGS, SWIN_ARGS, VIT_ARGS

from conftest import perturb

VIT_TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2, img_size=32, patch_size=16)
SWIN_TINY = dict(embed_dims=16, depths=[2, 2], num_heads=[1, 2], window_size=4, out_indices=(0, 1))
PCPVT_TINY = dict(embed_dims=[16, 32], num_heads=[1, 2], mlp_ratios=[2, 2], depths=[1, 1], sr_ratios=[2, 1],
                  patch_sizes=[4, 2], strides=[4, 2], out_indices=(0, 1))
PCPVT_ARCH = {k: tuple(v) for k, v in PCPVT_TINY.items() if k not in ('strides', 'out_indices')}  # in our arch=


def _toolbox(module: str, name: str):
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    return getattr(pytest.importorskip(module), name)


def _roundtrip(tmp_path, cls, **kwargs):
    """A perturbed model and a second one built with pretrained=<its checkpoint>, after init_weights()."""
    torch.manual_seed(0)
    source = perturb(cls(**kwargs))
    path = tmp_path / 'source.pth'
    torch.save(source.state_dict(), path)
    loaded = cls(pretrained=str(path), **kwargs)
    loaded.init_weights()
    return source, loaded


# ------------------------------------------------------------------------------------------- translation
def test_vit_top_level_sizes_are_arch_sizes_with_mmseg_defaults():
    ours = ViTPE(arch=dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2), img_size=32)
    toolbox = ViTPE(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2, img_size=32)
    assert (toolbox.embed_dims, toolbox.num_layers, toolbox.num_heads, toolbox.mlp_ratio) == (32, 2, 2, 2)
    assert [p.shape for p in toolbox.blocks.parameters()] == [p.shape for p in ours.blocks.parameters()]
    # written for mmseg's VisionTransformer: its defaults where ours differ
    assert ours.norm is not None and toolbox.norm is None
    assert ours.patch_embed.proj.bias is not None and toolbox.patch_embed.proj.bias is None
    assert ours.blocks[0].norm1.eps == 1e-6 and toolbox.blocks[0].norm1.eps == 1e-5
    # the size mmseg defaults to when a config gives only some sizes
    assert ViTPE(num_layers=1).embed_dims == 768
    # an explicit value of ours still wins
    assert ViTPE(embed_dims=32, num_layers=1, num_heads=2, img_size=32, final_norm=True).norm is not None


def test_sizes_given_both_ways_must_agree():
    model = ViTPE(arch=dict(embed_dims=32, num_layers=1, num_heads=2), embed_dims=32, img_size=32)
    assert model.embed_dims == 32
    with pytest.raises(ValueError, match=r"embed_dims=64 vs arch\['embed_dims'\]=32"):
        ViTPE(arch=dict(embed_dims=32, num_layers=1, num_heads=2), embed_dims=64)
    with pytest.raises(ValueError, match=r"depths=\[2, 2, 6, 2\] vs arch\['depths'\]=\(2, 2, 18, 2\)"):
        SwinRPB(arch='small', depths=[2, 2, 6, 2])
    with pytest.raises(ValueError, match=r'depths=\[1, 1\] and num_layers=\[2, 2\] set the same size \(depths\)'):
        CPVTv2(depths=[1, 1], num_layers=[2, 2], embed_dims=[16, 32], num_heads=[1, 2])


def test_swin_and_pcpvt_top_level_sizes():
    torch.manual_seed(0)
    swin = perturb(SwinRPB(**SWIN_TINY, strides=(4, 2))).eval()
    assert swin.out_channels == (16, 32) and len(swin.layers) == 2
    # the toolboxes pad maps not larger than the window (clamp_window=False); ours clamps by default
    arch = dict(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)), window_size=4, out_indices=(0, 1))
    padded, clamped = SwinRPB(**arch, clamp_window=False).eval(), SwinRPB(**arch).eval()
    padded.load_state_dict(swin.state_dict())
    clamped.load_state_dict(swin.state_dict())
    x = torch.randn(1, 3, 24, 24)  # 6x6 and 3x3 maps, windows of 4
    with torch.no_grad():
        out, expected, other = swin(x)[1], padded(x)[1], clamped(x)[1]
    torch.testing.assert_close(out, expected, atol=0, rtol=0)
    assert (out - other).abs().max() > 1e-3

    pcpvt = CPVTv2(**PCPVT_TINY)
    assert pcpvt.out_channels == (16, 32) and pcpvt.depths == (1, 1)
    # PCPVT defaults: no qkv bias, no norm after the stages, LN eps 1e-5
    assert pcpvt.blocks[0][0].attn.q.bias is None and pcpvt.norm is None and pcpvt.norm_list is None
    assert pcpvt.blocks[0][0].norm1.eps == 1e-5
    default = CPVTv2(arch=PCPVT_ARCH, out_indices=(0, 1))
    assert default.blocks[0][0].attn.q.bias is not None and default.norm is not None
    # mmseg PCPVT's own defaults for the sizes a config leaves out
    assert CPVTv2(depths=[1, 1, 1, 1]).embed_dims == (64, 128, 256, 512)


def test_pvt_names():
    """mmdet PyramidVisionTransformerV2: num_layers = depths, an int embed_dims times the heads of each stage."""
    model = CPVTv2(embed_dims=8, num_heads=[1, 2], num_layers=[1, 1], mlp_ratios=[2, 2], sr_ratios=[2, 1],
                   patch_sizes=[4, 2], strides=[4, 2], out_indices=(0, 1), num_stages=2, paddings=[0, 0],
                   use_conv_ffn=False, use_abs_pos_embed=False, pretrain_img_size=64, convert_weights=True)
    assert model.embed_dims == (8, 16) and model.depths == (1, 1) and model.img_size == (64, 64)
    with pytest.raises(ValueError, match=r'num_stages=4.*accepted: the number of stages'):
        CPVTv2(**PCPVT_TINY, num_stages=4)
    with pytest.raises(ValueError, match=r'paddings=\[3, 1\].*accepted: zeros'):
        CPVTv2(**PCPVT_TINY, paddings=[3, 1])
    with pytest.raises(ValueError, match=r'use_conv_ffn=True'):
        CPVTv2(**PCPVT_TINY, use_conv_ffn=True)


@pytest.mark.parametrize('cls, kwargs', [
    (ViTPE, dict(arch=dict(embed_dims=32, num_layers=1, num_heads=2), img_size=32)),
    (SwinRPB, dict(arch=dict(embed_dims=16, depths=(2, 2), num_heads=(1, 2)), window_size=4, out_indices=(0, 1))),
    (CPVTv2, dict(arch=PCPVT_ARCH, out_indices=(0, 1))),
])
def test_pretrained_becomes_init_cfg(tmp_path, cls, kwargs):
    source, loaded = _roundtrip(tmp_path, cls, **kwargs)
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert cls(pretrained=None, **kwargs) is not None
    with pytest.raises(ValueError, match='init_cfg and pretrained cannot be set at the same time'):
        cls(pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'), **kwargs)
    with pytest.raises(ValueError, match='pretrained must be a checkpoint path'):
        cls(pretrained=3, **kwargs)


def test_vit_out_origin_output_cls_token_and_norm_eval():
    torch.manual_seed(0)
    model = perturb(ViTPE(**VIT_TINY, out_indices=(0, 1), out_origin=True, output_cls_token=True,
                          norm_eval=True)).eval()
    plain = ViTPE(**VIT_TINY, out_indices=(0, 1))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        outs, maps = model(x), plain(x)
    assert len(outs) == 3 and model.out_channels == (32, 32, 32)
    assert all(isinstance(o, list) and len(o) == 2 and o[1].shape == (1, 32) for o in outs)
    for (feat, _), expected in zip(outs[1:], maps):
        torch.testing.assert_close(feat, expected, atol=0, rtol=0)
    assert outs[0][0].shape == maps[0].shape
    with pytest.raises(ValueError, match='output_cls_token=True needs with_cls_token=True'):
        ViTPE(**VIT_TINY, output_cls_token=True, with_cls_token=False)
    model.train()
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert model.blocks[0].attn.training
    plain.train()
    assert all(m.training for m in plain.modules() if isinstance(m, torch.nn.LayerNorm))


# ------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize('cls, kwargs, message', [
    (ViTPE, dict(act_cfg=dict(type='ReLU')),
     r"cannot honour act_cfg=\{'type': 'ReLU'\}.*accepted: dict\(type='GELU'\)"),
    (ViTPE, dict(patch_norm=True), r'patch_norm=True \(no norm after the patch embedding\); accepted: False'),
    (ViTPE, dict(pre_norm=True), r'pre_norm=True.*accepted: False'),
    (ViTPE, dict(num_fcs=3), r'num_fcs=3.*accepted: 2'),
    (ViTPE, dict(patch_pad='adaptive'), r"patch_pad='adaptive'.*accepted: 'corner'"),
    (ViTPE, dict(frozen_exclude=['pos_embed']), r"frozen_exclude=\['pos_embed'\].*frozen_stages"),
    (SwinRPB, dict(strides=(4, 2, 2, 1)), r'strides=\(4, 2, 2, 1\).*accepted: \(patch_size, 2, 2, \.\.\.\)'),
    (SwinRPB, dict(strides=(2, 2, 2, 2)), r'strides='),
    (SwinRPB, dict(use_abs_pos_embed=True), r"use_abs_pos_embed=True.*pe_type=\['rel_bias', 'abs'\]"),
    (SwinRPB, dict(norm_cfg=dict(type='BN')), r"norm_cfg=.*accepted: dict\(type='LN'\)"),
    (SwinRPB, dict(norm_cfg=dict(type='LN', eps=1e-6)), r'norm_cfg='),
    (SwinRPB, dict(convert_weights='yes'), r"convert_weights='yes'.*accepted: True or False"),
    (SwinRPB, dict(act_cfg=dict(type='ReLU')), r"accepted: dict\(type='GELU'\)"),
    (CPVTv2, dict(PCPVT_TINY, strides=[4, 1]), r'strides=\[4, 1\].*accepted: the patch sizes'),
    (CPVTv2, dict(PCPVT_TINY, norm_cfg=dict(type='LN', eps=1e-6)), r'only dict\(type=.LN.\) \(eps 1e-5\)'),
])
def test_values_we_cannot_honour(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_cpvt_norm_cfg_keeps_its_meaning_with_arch():
    model = CPVTv2(arch=PCPVT_ARCH, out_indices=(0, 1), norm_cfg=dict(type='LN', eps=1e-6))
    assert model.blocks[0][0].norm1.eps == 1e-6


@pytest.mark.parametrize('cls, table, sizes', [
    (ViTPE, VIT_ARGS, 'arch=dict(embed_dims=..., num_layers=..., num_heads=..., mlp_ratio=...)'),
    (SwinRPB, SWIN_ARGS, 'arch=dict(embed_dims=..., depths=..., num_heads=...)'),
    (CPVTv2, CPVT_ARGS, 'arch=dict(embed_dims=..., num_heads=..., mlp_ratios=..., sr_ratios=...'),
])
def test_unknown_option_says_where_sizes_go(cls, table, sizes):
    with pytest.raises(ValueError) as info:
        cls(depth_typo=3)
    message = str(info.value)
    assert "unknown option(s) ['depth_typo']" in message
    assert sizes in message
    assert f'with the meaning they have in {table.replaces}: {", ".join(table.names)}' in message


# ------------------------------------------------------------------------------------------- the toolbox's names
@pytest.mark.parametrize('table, module, name', [
    (VIT_ARGS, 'mmseg.models.backbones.vit', 'VisionTransformer'),
    (SWIN_ARGS, 'mmdet.models.backbones.swin', 'SwinTransformer'),
    (CPVT_ARGS, 'mmseg.models.backbones.twins', 'PCPVT'),
])
def test_tables_hold_the_toolbox_names_and_defaults(table, module, name):
    """Every name is an argument of the toolbox backbone (PVT's of mmdet PVT), and the toolbox-style defaults
    are that backbone's own."""
    params = inspect.signature(_toolbox(module, name).__init__).parameters
    if table is CPVT_ARGS:
        pvt = inspect.signature(_toolbox('mmdet.models.backbones.pvt', 'PyramidVisionTransformer').__init__)
        params = dict(pvt.parameters, **params)
    assert set(table.names) <= set(params)
    for key, value in table.defaults['arch'].items():
        default = params[key].default
        assert (tuple(default) if isinstance(default, list) else default) == value, key
    ours_to_toolbox = dict(final_norm='final_norm', patch_bias='patch_bias', qkv_bias='qkv_bias',
                           norm_after_stage='norm_after_stage', norm_cfg='norm_cfg')
    for key, value in table.defaults.items():
        if key in ours_to_toolbox and ours_to_toolbox[key] in params:
            assert params[ours_to_toolbox[key]].default == value, key


# ------------------------------------------------------------------------------------------- same kwargs, same net
def _compare(ref, ours, sizes):
    for hw in sizes:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            expected, out = ref(x), ours(x)
        assert len(out) == len(expected)
        for o, r in zip(out, expected):
            if isinstance(r, (list, tuple)):  # [map, cls token]
                assert isinstance(o, list)
                for a, b in zip(o, r):
                    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
            else:
                torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def _same_kwargs_pair(tmp_path, ref_cls, ours_cls, kwargs):
    torch.manual_seed(0)
    ref = ref_cls(**kwargs)
    ref.init_weights()
    perturb(ref).eval()
    path = tmp_path / 'ref.pth'
    torch.save({'state_dict': ref.state_dict()}, path)
    ours = ours_cls(**kwargs, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    return ref, ours.eval()


def test_same_kwargs_as_mmseg_vit(tmp_path):
    kwargs = dict(VIT_TINY, out_indices=(0, 1), out_origin=True, output_cls_token=True, act_cfg=dict(type='GELU'),
                  norm_cfg=dict(type='LN', eps=1e-6), norm_eval=True, interpolate_mode='bicubic', drop_path_rate=0.1)
    ref, ours = _same_kwargs_pair(tmp_path, _toolbox('mmseg.models.backbones.vit', 'VisionTransformer'), ViTPE,
                                  kwargs)
    _compare(ref, ours, [(32, 32), (40, 56)])


def test_same_kwargs_as_mmdet_swin(tmp_path):
    kwargs = dict(SWIN_TINY, strides=(4, 2), out_indices=(1,), mlp_ratio=4, qkv_bias=True, qk_scale=None,
                  patch_norm=True, use_abs_pos_embed=False, act_cfg=dict(type='GELU'), norm_cfg=dict(type='LN'),
                  convert_weights=True, pretrain_img_size=(64,))
    ref, ours = _same_kwargs_pair(tmp_path, _toolbox('mmdet.models.backbones.swin', 'SwinTransformer'), SwinRPB,
                                  kwargs)
    # 9x9 / 5x5 maps for 36x36: windows of 4 are padded and shifted as the toolbox does (clamp_window=False)
    _compare(ref, ours, [(36, 36), (30, 50)])


def test_same_kwargs_as_mmseg_pcpvt(tmp_path):
    kwargs = dict(PCPVT_TINY, in_channels=3, out_indices=(0, 1), qkv_bias=True, norm_cfg=dict(type='LN'),
                  norm_after_stage=True)
    ref, ours = _same_kwargs_pair(tmp_path, _toolbox('mmseg.models.backbones.twins', 'PCPVT'), CPVTv2, kwargs)
    _compare(ref, ours, [(32, 32), (37, 50)])


# ------------------------------------------------------------------------------------------- argument bugs
def test_vit_arch_dict_with_mlp_ratio():
    """Issue 11: dict(mlp_ratio=4.0, **arch) raised 'got multiple values for keyword argument mlp_ratio'."""
    model = ViTPE(arch=dict(embed_dims=32, num_layers=1, num_heads=2, mlp_ratio=3), img_size=32)
    assert model.mlp_ratio == 3 and model.blocks[0].mlp.fc1.out_features == 96


def test_swin_out_indices_sorted_and_checked():
    arch = dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
    model = SwinRPB(arch=arch, out_indices=(3, 0), window_size=4).eval()
    assert model.out_indices == (0, 3) and model.out_channels == (16, 128)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == list(model.out_channels)
    assert SwinRPB(arch=arch, out_indices=(-1,), window_size=4).out_indices == (3,)
    with pytest.raises(ValueError, match=r'out_indices \(1, 1\) name a stage twice'):
        SwinRPB(arch=arch, out_indices=(1, 1))
    with pytest.raises(ValueError, match=r'out_indices must be stage indices in \[-4, 3\]'):
        SwinRPB(arch=arch, out_indices=(4,))


def test_size_arguments():
    with pytest.raises(ValueError, match=r'pretrain_img_size must be .*got \(224, 224, 224\)'):
        SwinRPB(pretrain_img_size=(224, 224, 224))
    table = [v for k, v in SwinRPB(pretrain_img_size=(224,), pe_type='abs').state_dict().items() if 'pos_embed' in k]
    assert [t.shape[1] for t in table] == [56 * 56]
    assert ViTPE(arch='deit-ti', img_size=(224,)).img_size == (224, 224)
    assert SwinRPB(window_size=(7,)).window_size == (7, 7)
    assert CPVTv2(img_size=(224,)).img_size == (224, 224)

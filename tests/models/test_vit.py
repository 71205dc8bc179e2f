"""ViTPE: equivalence with timm / mmseg ViT, any input size, PE types, windowed blocks, SFP, freezing."""
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from vitpe_mm.layers import (
    PE_TYPES,
    BlockSpec,
    StageSpec,
    build_pos_encoding,
    build_sincos_2d_pos_embed,
    resample_abs_pos_embed,
    resize_rel_pos_bias_table,
)
from vitpe_mm.layers.attention import pad_prefix_bias
from vitpe_mm.models.vit import ViTBlock, ViTPE

from conftest import perturb

TINY = dict(embed_dims=32, num_layers=4, num_heads=2)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


_randomise = partial(perturb, seed=0, std=0.05)  # swapped weights / biases / norms show up in comparisons


def _tokens_to_map(tokens: torch.Tensor, hw) -> torch.Tensor:
    b, _, c = tokens.shape
    return tokens.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2)


def _pretrained(path, **kwargs) -> ViTPE:
    """ViTPE (deit-s unless `arch` is given) loaded from `path` through init_cfg, format detected; eval mode."""
    model = ViTPE(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model.eval()


def _timm_reference(name: str) -> torch.nn.Module:
    """A timm model with dynamic_img_size and perturbed random weights, eval mode."""
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, dynamic_img_size=True).eval()
    _randomise(ref, std=0.02)
    return ref


# ------------------------------------------------------------------------------------------------ timm
@pytest.mark.parametrize('name', ['deit_small_patch16_224', 'vit_small_patch16_224'])
def test_matches_timm_dynamic_img_size(name, tmp_path):
    """timm forward_features (final-normed tokens, cls dropped) == ours with out_type='featmap' (defaults).

    Both resample the 14x14 table with bicubic + antialias (timm's dynamic_img_size path; our default).
    """
    ref = _timm_reference(name)
    path = tmp_path / 'timm.pth'
    torch.save(ref.state_dict(), path)
    ours = _pretrained(path)
    for hw in [(224, 224), (384, 384), (224, 320)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            expected = _tokens_to_map(ref.forward_features(x)[:, 1:], (hw[0] // 16, hw[1] // 16))
            out, = ours(x)
        diff = (out - expected).abs().max().item()
        print(f'{name} {hw}: max abs diff {diff:.3g}')
        assert out.shape == (1, 384, hw[0] // 16, hw[1] // 16)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_matches_timm_distilled_deit(tmp_path):
    """A distilled DeiT (cls + dist token) with `with_dist_token=True` == timm's VisionTransformerDistilled
    forward_features (patch tokens), at the training size and at resampled grids; without the dist token the
    patch features are another function (the token takes part in every block's attention)."""
    ref = _timm_reference('deit_small_distilled_patch16_224')
    path = tmp_path / 'deit_distilled.pth'
    torch.save({'model': ref.state_dict()}, path)  # the official DeiT release wraps the weights in 'model'
    ours = _pretrained(path, with_dist_token=True)
    assert torch.equal(ours.dist_token, ref.dist_token) and ours.pos_embed[0].pos_embed.shape == (1, 2 + 196, 384)
    dropped = _pretrained(path)  # dist token dropped
    for hw in [(224, 224), (224, 320), (160, 288)]:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            expected = _tokens_to_map(ref.forward_features(x)[:, 2:], (hw[0] // 16, hw[1] // 16))
            out, = ours(x)
            without, = dropped(x)
        print(f'distilled {hw}: max abs diff {(out - expected).abs().max().item():.3g}, without the dist token '
              f'{(without - expected).abs().max().item():.3g}')
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
        assert (without - expected).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------ mmseg
def _mmseg_vit(**kwargs):
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed for mmseg references')
    from mmseg.models.backbones.vit import VisionTransformer
    torch.manual_seed(0)
    ref = VisionTransformer(**kwargs)
    ref.init_weights()
    _randomise(ref)
    ref.eval()  # mmseg's train() returns None
    return ref


def _ours_from(ref: torch.nn.Module, tmp_path, name: str = 'mmseg.pth', **kwargs) -> ViTPE:
    path = tmp_path / name
    torch.save({'state_dict': ref.state_dict()}, path)
    return _pretrained(path, **kwargs)


MMSEG_TINY = dict(img_size=128, patch_size=16, embed_dims=32, num_layers=3, num_heads=2, drop_path_rate=0.0)


@pytest.mark.parametrize('with_cls_token', [True, False])
def test_matches_mmseg_where_mmseg_is_right(tmp_path, with_cls_token):
    """mmseg resamples with bicubic, no antialias (antialias=False here); LN eps 1e-5; no patch bias."""
    ref = _mmseg_vit(out_indices=(0, 2), final_norm=True, with_cls_token=with_cls_token, **MMSEG_TINY)
    ours = _ours_from(ref, tmp_path, arch=dict(embed_dims=32, num_layers=3, num_heads=2), img_size=128,
                      out_indices=(0, 2), norm_cfg=dict(type='LN'), antialias=False, with_cls_token=with_cls_token)
    # native, larger, smaller (downsampled PE), non-square, non-divisible (both pad bottom/right)
    for hw in [(128, 128), (192, 192), (96, 96), (128, 192), (100, 140)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            expected, out = ref(x), ours(x)
        assert len(out) == len(expected) == 2
        for level, (a, b) in enumerate(zip(out, expected)):
            diff = (a - b).abs().max().item()
            print(f'mmseg cls={with_cls_token} {hw} out {level}: max abs diff {diff:.3g}')
            assert a.shape == (2, 32, _ceil(hw[0], 16), _ceil(hw[1], 16))
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_mmseg_skips_resampling_when_token_count_matches(tmp_path):
    """mmseg bug: a 32x32 table is added unresampled to a 16x64 grid (both 1024 tokens); ours resamples."""
    kwargs = dict(img_size=512, patch_size=16, embed_dims=16, num_layers=1, num_heads=2)
    ref = _mmseg_vit(**kwargs)
    arch = dict(embed_dims=16, num_layers=1, num_heads=2)
    common = dict(arch=arch, norm_cfg=dict(type='LN'), antialias=False, final_norm=False)
    ours = _ours_from(ref, tmp_path, img_size=512, **common)
    # The same weights, with the 1025-row table taken verbatim as a 16x64 table (what mmseg computes) ...
    verbatim = _ours_from(ref, tmp_path, img_size=(256, 1024), **common)
    assert torch.equal(verbatim.pos_embed[0].pos_embed, ref.pos_embed)
    # ... and with the table correctly resampled from 32x32 to 16x64 (what should be computed).
    resampled = _ours_from(ref, tmp_path, img_size=(256, 1024), **common)
    with torch.no_grad():
        resampled.pos_embed[0].pos_embed.copy_(
            resample_abs_pos_embed(ref.pos_embed, (16, 64), (32, 32), 1, 'bicubic', antialias=False))

    x = torch.randn(1, 3, 256, 1024)
    with torch.no_grad():
        mmseg_out, = ref(x)
        ours_out, = ours(x)
        wrong, = verbatim(x)
        right, = resampled(x)
    print(f'mmseg 16x64 grid vs 32x32 table: mmseg vs unresampled {(mmseg_out - wrong).abs().max():.3g}, '
          f'ours vs resampled {(ours_out - right).abs().max():.3g}, '
          f'ours vs mmseg {(ours_out - mmseg_out).abs().max():.3g}')
    torch.testing.assert_close(mmseg_out, wrong, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_out, right, atol=1e-5, rtol=0)
    assert (ours_out - mmseg_out).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------ sizes
SIZES = [(224, 224), (512, 512), (480, 640), (333, 517), (64, 64), (16, 16), (16, 33)]


@pytest.mark.parametrize('hw', SIZES)
def test_featmap_any_size(hw):
    model = ViTPE(TINY, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert model.out_channels == (32, 32)
    assert [o.shape for o in outs] == [(1, 32, _ceil(hw[0], 16), _ceil(hw[1], 16))] * 2
    assert all(o.is_contiguous() and torch.isfinite(o).all() for o in outs)


@pytest.mark.parametrize('hw', SIZES)
@pytest.mark.parametrize('pe_type', ['abs', 'rel_bias'])
def test_sfp_windowed_any_size(hw, pe_type):
    model = ViTPE(TINY, with_cls_token=False, window_size=3, global_attn_indexes=(1, 3), out_type='sfp',
                  pe_type=pe_type).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert model.out_channels == (8, 16, 32, 32)
    for out, stride, c in zip(outs, (4, 8, 16, 32), model.out_channels):
        assert out.shape == (1, c, _ceil(hw[0], stride), _ceil(hw[1], stride))
        assert torch.isfinite(out).all()


def test_sfp_levels_follow_vitdet():
    model = ViTPE(TINY, out_type='sfp').eval()
    x = torch.randn(2, 3, 80, 112)
    with torch.no_grad():
        p4, p8, p16, p32 = model(x)
        feat = ViTPE(TINY, out_type='featmap')
        feat.load_state_dict(model.state_dict(), strict=False)
        last, = feat.eval()(x)
    torch.testing.assert_close(p16, last)  # identity at stride 16 (after the final norm)
    torch.testing.assert_close(p32, F.max_pool2d(last, 2, 2, ceil_mode=True))
    torch.testing.assert_close(p8, model.fpn2(last))
    assert [type(m).__name__ for m in model.fpn1] == ['ConvTranspose2d', 'LayerNorm2d', 'GELU', 'ConvTranspose2d']


def test_sfp_subset_builds_only_requested_levels():
    model = ViTPE(TINY, out_type='sfp', out_indices=(1, 3))
    assert model.out_channels == (16, 32)
    assert not hasattr(model, 'fpn1') and hasattr(model, 'fpn2')
    outs = model.eval()(torch.randn(1, 3, 48, 48))
    assert [o.shape[-1] for o in outs] == [6, 2]


def test_below_minimum_size_and_wrong_channels():
    model = ViTPE(TINY)
    with pytest.raises(ValueError, match='smaller than the patch size 16x16'):
        model(torch.randn(1, 3, 15, 64))
    with pytest.raises(ValueError, match='in_channels=3'):
        model(torch.randn(1, 4, 64, 64))


# ------------------------------------------------------------------------------------------------ PE types
@pytest.mark.parametrize('pe_type', PE_TYPES)
def test_dist_token_is_a_prefix_token_for_every_pe_type(pe_type):
    """With the dist token the output maps keep the grid's shape and depend on the token (it is attended to), and
    it is prefix everywhere: two prefix rows in the abs table, passed through the PEG, zero relative bias."""
    torch.manual_seed(0)
    model = ViTPE(TINY, img_size=64, pe_type=pe_type, with_dist_token=True).eval()
    assert model.num_prefix_tokens == 2
    if pe_type in ('abs', 'abs_nointerp'):
        assert model.pos_embed[0].pos_embed.shape == (1, 2 + 16, 32)
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        out, = model(x)
        model.dist_token.add_(torch.randn(32))  # not a constant: LayerNorm would remove that
        moved, = model(x)
    assert out.shape == (1, 32, 3, 4)
    assert (moved - out).abs().max() > 1e-3


@pytest.mark.parametrize('pe_type', PE_TYPES)
def test_every_pe_type_runs_at_odd_sizes(pe_type):
    model = ViTPE(TINY, img_size=64, pe_type=pe_type).eval()
    for hw in [(64, 64), (48, 64), (33, 47)] if pe_type == 'abs_nointerp' else [(64, 64), (112, 80), (33, 47)]:
        with torch.no_grad():
            out, = model(torch.randn(1, 3, *hw))
        assert out.shape == (1, 32, _ceil(hw[0], 16), _ceil(hw[1], 16))
    names = set(model.state_dict())
    assert ('pos_embed.0.pos_embed' in names) == (pe_type in ('abs', 'abs_nointerp'))
    assert ('pos_block.0.proj.0.weight' in names) == (pe_type == 'peg')
    assert ('rel_pos_bias.0.3.relative_position_bias_table' in names) == (pe_type == 'rel_bias')


def test_abs_nointerp_crops_and_rejects_larger_grids():
    model = ViTPE(TINY, img_size=64, pe_type='abs_nointerp').eval()
    table = model.pos_embed[0].pos_embed
    expected = torch.cat([table[:, :1], table[:, 1:].reshape(1, 4, 4, 32)[:, :2, :3].reshape(1, 6, 32)], 1)
    torch.testing.assert_close(model.pos_embed[0]((2, 3)), expected)
    with pytest.raises(ValueError, match='larger than the absolute PE grid'):
        model(torch.randn(1, 3, 64, 80))


def test_abs_resamples_per_grid_every_forward():
    model = ViTPE(TINY, img_size=64).eval()
    x = torch.randn(1, 3, 80, 48)
    with torch.no_grad():
        a, = model(x)
        table = model.pos_embed[0]((5, 3))
        b, = model(x)
        model.pos_embed[0].pos_embed.data.mul_(2.0)  # as EMA hooks write (no version change): seen at once
        c, = model(x)
        torch.testing.assert_close(model.pos_embed[0]((5, 3)), 2 * table)
    assert torch.equal(a, b) and not torch.allclose(a, c, atol=1e-6)
    torch.testing.assert_close(table, resample_abs_pos_embed(model.pos_embed[0].pos_embed / 2, (5, 3), (4, 4), 1))


def test_sincos_is_computed_for_the_grid():
    model = ViTPE(TINY, img_size=64, pe_type='sincos')
    x = torch.zeros(1, 1, 32)
    table = model.pos_embed[0]((5, 7), x)
    assert torch.equal(table[:, 0], torch.zeros(1, 32))
    torch.testing.assert_close(table[:, 1:], build_sincos_2d_pos_embed((5, 7), 32))
    assert model.pos_embed[0]((5, 7), x) is table  # sizes only: cached
    assert not any('pos_embed' in k for k in model.state_dict())


def test_peg_follows_first_block_and_passes_cls_token():
    model = ViTPE(TINY, img_size=64, pe_type='peg').eval()
    seen = {}
    model.pos_block[0].register_forward_hook(lambda m, args, out: seen.update(inp=args[0], out=out))
    model.blocks[0].register_forward_hook(lambda m, args, out: seen.update(block0=out))
    with torch.no_grad():
        model(torch.randn(1, 3, 48, 80))
    assert seen['inp'] is seen['block0']
    assert torch.equal(seen['out'][:, 0], seen['inp'][:, 0])  # the cls token passes through
    assert not torch.equal(seen['out'][:, 1:], seen['inp'][:, 1:])


def test_rel_bias_global_table_resampled_to_the_grid_with_zero_cls_bias():
    model = ViTPE(TINY, img_size=64, pe_type='rel_bias').eval()
    module = model.rel_pos_bias[0][0]
    assert module.window_size == (4, 4)
    pe = model.pos_encoding
    with torch.no_grad():  # what the global attention of block 0 adds: the grid bias, zeros for the cls token
        bias = pad_prefix_bias(pe.block(pe.prepare(0, (3, 5), torch.zeros(1)), 0).attn_bias((3, 5)), 1)
    assert bias.shape == (2, 16, 16)
    assert bias[:, 0].abs().sum() == 0 and bias[:, :, 0].abs().sum() == 0
    table = resize_rel_pos_bias_table(module.relative_position_bias_table, (3, 5), (4, 4))
    # token (0, 0) vs token (2, 4): offset (-2, -4) -> index (dy + 2) * 9 + (dx + 4)
    torch.testing.assert_close(bias[:, 1, 1 + 2 * 5 + 4], table[0])


# ------------------------------------------------------------------------------------------------ windows
def _explicit_windowed_block(block: ViTBlock, x: torch.Tensor, hw, window, table=None) -> torch.Tensor:
    """Per-window loop: pad the normalised map, softmax(q k^T / sqrt(d) + B) v in each window, crop."""
    (h, w), (mh, mw) = hw, window
    b, _, c = x.shape
    nh = block.attn.num_heads
    d = c // nh
    hp, wp = _ceil(h, mh) * mh, _ceil(w, mw) * mw
    xn = F.pad(block.norm1(x).reshape(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    bias = torch.zeros(nh, mh * mw, mh * mw)
    if table is not None:
        for qi in range(mh * mw):
            for ki in range(mh * mw):
                dy, dx = qi // mw - ki // mw, qi % mw - ki % mw
                bias[:, qi, ki] = table[(dy + mh - 1) * (2 * mw - 1) + dx + mw - 1]
    out = torch.zeros(b, hp, wp, c)
    for i in range(0, hp, mh):
        for j in range(0, wp, mw):
            tokens = xn[:, i:i + mh, j:j + mw].reshape(b, mh * mw, c)
            q, k, v = block.attn.qkv(tokens).reshape(b, mh * mw, 3, nh, d).permute(2, 0, 3, 1, 4)
            attn = (q @ k.transpose(-2, -1) * d ** -0.5 + bias).softmax(-1)
            y = block.attn.proj((attn @ v).transpose(1, 2).reshape(b, mh * mw, c))
            out[:, i:i + mh, j:j + mw] = y.reshape(b, mh, mw, c)
    x = x + out[:, :h, :w].reshape(b, h * w, c)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize('rel_bias', [False, True])
@pytest.mark.parametrize('hw', [(7, 10), (6, 8), (2, 3)])
def test_windowed_attention_matches_per_window_reference(rel_bias, hw):
    torch.manual_seed(0)
    window = (3, 4)
    block = ViTBlock(32, 4, window_size=window).eval()
    _randomise(block, std=0.2)
    pe = build_pos_encoding('rel_bias' if rel_bias else 'none',
                            [StageSpec(32, 4, (14, 14), (BlockSpec(window_size=window),))])
    for part in pe.parts:
        _randomise(part, std=0.2)
    x = torch.randn(2, hw[0] * hw[1], 32)
    with torch.no_grad():
        out = block(x, hw, pe.block(pe.prepare(0, hw, x), 0))
        table = pe.parts[0][0][0].relative_position_bias_table if rel_bias else None
        expected = _explicit_windowed_block(block, x, hw, window, table)
    if rel_bias:
        assert table.shape == (5 * 7, 4)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_vitdet_default_global_blocks():
    model = ViTPE(dict(embed_dims=32, num_layers=12, num_heads=2), with_cls_token=False, window_size=14,
                  out_type='sfp')
    assert model.global_attn_indexes == (2, 5, 8, 11)
    assert [b.window_size is None for b in model.blocks] == [i in (2, 5, 8, 11) for i in range(12)]
    assert ViTPE(TINY).global_attn_indexes == (0, 1, 2, 3)


# ------------------------------------------------------------------------------------------------ training
def test_frozen_stages_stop_gradients():
    model = ViTPE(TINY, pe_type='peg', frozen_stages=2)
    model.train()
    out, = model(torch.randn(1, 3, 32, 48))
    out.sum().backward()
    frozen = ['patch_embed.', 'cls_token', 'pos_block.', 'blocks.0.', 'blocks.1.']
    for name, p in model.named_parameters():
        is_frozen = any(name.startswith(f) for f in frozen)
        assert p.requires_grad != is_frozen, name
        assert (p.grad is None) == is_frozen, name
    assert not model.blocks[1].training and model.blocks[2].training
    everything = ViTPE(TINY, frozen_stages=4)
    everything.train()
    assert not any(p.requires_grad for p in everything.parameters())
    distilled = ViTPE(TINY, with_dist_token=True, frozen_stages=0)
    distilled.train()
    assert not distilled.dist_token.requires_grad and not distilled.cls_token.requires_grad
    assert 'dist_token' in distilled.no_weight_decay_names()


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    plain = ViTPE(TINY, out_type='sfp', with_cls_token=False, window_size=2, pe_type='rel_bias')
    ckpt = ViTPE(TINY, out_type='sfp', with_cls_token=False, window_size=2, pe_type='rel_bias', with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 40, 56)
    grads = []
    for model in (plain, ckpt):
        model.train()
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-6, rtol=1e-5)


def test_drop_path_increases_linearly():
    model = ViTPE(TINY, drop_path_rate=0.3)
    rates = [b.drop_path.drop_prob if hasattr(b.drop_path, 'drop_prob') else 0.0 for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_presets_and_no_weight_decay():
    expected = {'deit-ti': (192, 3), 'deit-s': (384, 6), 'deit-b': (768, 12), 'vit-b': (768, 12)}
    for arch, (dims, heads) in expected.items():
        cfg = ViTPE.arch_zoo[arch]
        assert (cfg['embed_dims'], cfg['num_heads'], cfg['num_layers'], cfg['mlp_ratio']) == (dims, heads, 12, 4.0)
    model = ViTPE('deit-ti', out_type='sfp', with_cls_token=False, window_size=14)
    assert model.out_channels == (48, 96, 192, 192)
    assert model.blocks[0].attn.qkv.bias is not None and model.blocks[0].mlp.fc1.out_features == 768
    assert 'pos_embed.0.pos_embed' in model.no_weight_decay_names()


# ------------------------------------------------------------------------------------------------ arguments
@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='deit-xl'), "accepted: 'deit-ti'"),
    (dict(arch=dict(embed_dims=32, num_layers=2, num_heads=2, depth=3)), 'unknown'),
    (dict(arch=dict(embed_dims=32, num_heads=2)), 'missing'),
    (dict(arch=dict(embed_dims=30, num_layers=2, num_heads=4)), 'must divide'),
    (dict(pe_type='rope'), 'pe_type'),
    (dict(out_type='fpn'), 'out_type'),
    (dict(out_indices=4), r'block indices in \[-4, 4\)'),
    (dict(out_type='sfp', out_indices=(0, 4)), 'pyramid levels'),
    (dict(out_indices=(2, 1)), 'increasing'),
    (dict(window_size=4), 'with_cls_token=False'),
    (dict(with_cls_token=False, with_dist_token=True), 'needs with_cls_token=True'),
    (dict(global_attn_indexes=(1,)), 'needs window_size'),
    (dict(with_cls_token=False, window_size=4, global_attn_indexes=(7,)), 'block indices'),
    (dict(norm_cfg=dict(type='BN')), 'LayerNorm'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(arch=dict(embed_dims=18, num_layers=1, num_heads=2), pe_type='sincos'), 'divisible by 4'),
    (dict(arch=dict(embed_dims=18, num_layers=1, num_heads=2), out_type='sfp'), 'divisible by 4'),
    (dict(init_cfg=dict(type='Pretrained')), 'checkpoint=PATH'),
    (dict(patch_size=(16, 8)), 'patch_size'),
    (dict(img_size=0), 'img_size'),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault('arch', TINY)
    with pytest.raises(ValueError, match=match):
        ViTPE(**kwargs)


def test_registered_in_root_registry():
    from mmengine.registry import MODELS
    model = MODELS.build(dict(type='ViTPE', arch=TINY, out_indices=(-1,)))
    assert isinstance(model, ViTPE) and model.out_indices == (3,)
    assert math.isclose(model.norm.eps, 1e-6)


def test_featmap_stops_after_the_last_requested_block():
    model = ViTPE(TINY, out_indices=(0, 1)).eval()
    ran = []
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(lambda m, a, o, i=i: ran.append(i))
    model(torch.randn(1, 3, 32, 32))
    assert ran == [0, 1]

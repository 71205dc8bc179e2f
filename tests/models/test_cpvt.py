"""CPVTv2 (Twins-PCPVT): equivalence with timm and mmseg, any input size, PE types, PEG placement, options."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from vitpe_mm.layers import PE_TYPES, resample_abs_pos_embed
from vitpe_mm.models.cpvt import ARCH_SETTINGS, CPVTv2, min_input_size

from conftest import perturb

# Narrow and shallow, same structure as the presets (patch 4, 2, 2, 2; sr 8, 4, 2, 1).
TINY = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))
STRIDES = (4, 8, 16, 32)


_perturb = perturb  # random weights everywhere (biases, norms, PEG too): equivalence checks see every parameter


def _tiny(**kwargs):
    torch.manual_seed(0)
    return _perturb(CPVTv2(arch=TINY, **kwargs)).eval()


def _save(state, tmp_path, name):
    path = tmp_path / name
    torch.save({k: v.clone() for k, v in state.items()}, path)
    return str(path)


def _load(tmp_path, state, name='ckpt.pth', **kwargs):
    model = CPVTv2(init_cfg=dict(type='Pretrained', checkpoint=_save(state, tmp_path, name)), **kwargs)
    model.init_weights()
    return model.eval()


def _mmseg_backbones():
    """mmseg needs mmcv with its ops (built by tools/setup_env.sh)."""
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmseg')
    from mmseg.models import backbones
    return backbones


# ---------------------------------------------------------------------------------------------------------------
# Equivalence with the references (Twins-S at its real size, random weights)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def timm_pair(tmp_path_factory):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    ref = _perturb(timm.create_model('twins_pcpvt_small', pretrained=False)).eval()
    ours = _load(tmp_path_factory.mktemp('timm'), ref.state_dict())
    return ref, ours


# timm floors the patch grid (drops border pixels), we pad: compare on sizes divisible by 32.
@pytest.mark.parametrize('hw', [(224, 224), (256, 320), pytest.param((384, 384), marks=pytest.mark.slow)])
def test_matches_timm_twins_pcpvt_small(timm_pair, hw):
    ref, ours = timm_pair
    torch.manual_seed(2)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        # the final tokens after `norm` (forward_features' result) and the 4 stage maps, in one pass
        feats, inter = ref.forward_intermediates(x, norm=True)
        if hw == (224, 224):
            torch.testing.assert_close(feats, ref.forward_features(x), atol=0, rtol=0)
        out = ours(x)
    h, w = hw[0] // 32, hw[1] // 32
    final = feats.reshape(1, h, w, -1).permute(0, 3, 1, 2)
    diffs = [(o - r).abs().max().item() for o, r in zip(out, inter)]
    print(f'timm twins_pcpvt_small {hw}: final max abs diff {(out[-1] - final).abs().max().item():.2e}, '
          f'stages {["%.2e" % d for d in diffs]}')
    torch.testing.assert_close(out[-1], final, atol=1e-5, rtol=0)
    for o, r in zip(out, inter):
        torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def _mmseg_pcpvt(**kwargs):
    PCPVT = _mmseg_backbones().PCPVT
    torch.manual_seed(0)
    ref = PCPVT(in_channels=3, embed_dims=[64, 128, 320, 512], num_heads=[1, 2, 5, 8], patch_sizes=[4, 2, 2, 2],
                strides=[4, 2, 2, 2], mlp_ratios=[8, 8, 4, 4], out_indices=(0, 1, 2, 3), qkv_bias=True,
                norm_cfg=dict(type='LN'), depths=[3, 4, 6, 3], sr_ratios=[8, 4, 2, 1], **kwargs)
    ref.init_weights()
    return _perturb(ref).eval()


@pytest.fixture(scope='module')
def mmseg_pair(tmp_path_factory):
    # mmseg's configs for Twins-PCPVT: norm_cfg LN (eps 1e-5 everywhere), norm_after_stage=False.
    ref = _mmseg_pcpvt(norm_after_stage=False)
    ours = _load(tmp_path_factory.mktemp('mmseg'), ref.state_dict(), norm_after_stage=False,
                 norm_cfg=dict(type='LN', eps=1e-5))
    return ref, ours


@pytest.mark.parametrize('hw', [(224, 224), pytest.param((384, 384), marks=pytest.mark.slow), (256, 320), (333, 517)])
def test_matches_mmseg_pcpvt_all_stages(mmseg_pair, hw):
    ref, ours = mmseg_pair
    torch.manual_seed(3)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        expected, out = ref(x), ours(x)
    assert len(out) == len(expected) == 4
    diffs = [(o - r).abs().max().item() for o, r in zip(out, expected)]
    print(f'mmseg PCPVT {hw}: max abs diff per stage {["%.2e" % d for d in diffs]}')
    for o, r, s in zip(out, expected, STRIDES):
        assert o.shape == r.shape == (1, o.shape[1], math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def test_matches_mmseg_pcpvt_float64(mmseg_pair):
    # mmseg runs nn.MultiheadAttention, we run the fused kernel: in float64 the two agree to rounding, which
    # shows the fp32 differences above are float32 rounding only.
    ref, ours = (copy.deepcopy(m).double() for m in mmseg_pair)
    x = torch.randn(1, 3, 100, 140, dtype=torch.float64)
    with torch.no_grad():
        for o, r in zip(ours(x), ref(x)):
            torch.testing.assert_close(o, r, atol=1e-10, rtol=0)


def test_matches_mmseg_norm_after_stage_true(tmp_path):
    PCPVT = _mmseg_backbones().PCPVT
    torch.manual_seed(0)
    ref = _perturb(PCPVT(embed_dims=list(TINY['embed_dims']), num_heads=list(TINY['num_heads']),
                         mlp_ratios=list(TINY['mlp_ratios']), depths=list(TINY['depths']), qkv_bias=True,
                         norm_after_stage=True)).eval()
    ours = _load(tmp_path, ref.state_dict(), arch=TINY, norm_after_stage=True, norm_cfg=dict(type='LN', eps=1e-5))
    x = torch.randn(2, 3, 97, 130)
    with torch.no_grad():
        for o, r in zip(ours(x), ref(x)):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Any input size
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('hw', [(224, 224), (512, 512), (480, 640), (333, 517), (64, 64), (29, 29), (29, 301)])
def test_any_input_size(hw):
    model = _tiny()
    with torch.no_grad():
        out = model(torch.randn(1, 3, *hw))
    assert len(out) == 4
    for o, s, c in zip(out, STRIDES, model.out_channels):
        assert o.shape == (1, c, math.ceil(hw[0] / s), math.ceil(hw[1] / s))
        assert torch.isfinite(o).all()


def test_smallest_input():
    assert CPVTv2(arch=TINY).min_input_size == 29  # ceil(29 / 4) = 8 = sr of stage 1
    # without reduction: stage 4 needs a 2x2 grid to patch, ceil(17 / 16) = 2
    assert min_input_size((4, 2, 2, 2), (1, 1, 1, 1)) == 17
    model = _tiny()
    for hw in [(28, 64), (64, 28), (20, 20)]:
        with pytest.raises(ValueError, match='29x29'):
            model(torch.randn(1, 3, *hw))
    # Only the stages that are run count.
    assert CPVTv2(arch=TINY, out_indices=(1,)).min_input_size == 29
    assert CPVTv2(arch=dict(TINY, sr_ratios=(1, 4, 2, 1)), out_indices=(0,)).min_input_size == 4


def test_wrong_channels_and_rank():
    model = _tiny()
    with pytest.raises(ValueError, match='in_channels=3'):
        model(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match='B, C, H, W'):
        model(torch.randn(3, 64, 64))


def test_padding_is_bottom_right_and_crop_free():
    # A map whose bottom/right padding is zeros equals the unpadded input on the first stage's top-left tokens.
    model = _tiny(out_indices=(0,))
    x = torch.randn(1, 3, 61, 61)
    with torch.no_grad():
        out = model(x)[0]
        padded = model(F.pad(x, (0, 3, 0, 3)))[0]
    assert out.shape == padded.shape == (1, 16, 16, 16)
    torch.testing.assert_close(out, padded, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------
# Presets, arguments
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch,depths,params_m', [('small', (3, 4, 6, 3), 23.59), ('base', (3, 4, 18, 3), 43.32),
                                                  ('large', (3, 8, 27, 3), 60.48)])
def test_presets(arch, depths, params_m):
    with torch.device('meta'):  # shapes only
        model = CPVTv2(arch=arch)
    assert model.depths == depths == ARCH_SETTINGS[arch]['depths']
    assert model.out_channels == (64, 128, 320, 512)
    # Twins paper: PCPVT-S 24.1M, -B 43.8M, -L 60.9M with the 1000-class head (0.51M).
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - params_m) < 0.01


def test_out_indices_and_negative():
    model = _tiny(out_indices=(-1, 1))
    assert model.out_indices == (1, 3) and model.out_channels == (32, 64)
    out = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [32, 64]
    # Stages after the last index are not run (and still exist for checkpoint loading).
    early = _tiny(out_indices=(0,))
    assert len(early(torch.randn(1, 3, 64, 64))) == 1


@pytest.mark.parametrize('kwargs,match', [
    (dict(arch='tiny'), "'small'"),
    (dict(arch=dict(embed_dim=(8,))), 'accepted: embed_dims'),
    (dict(arch=dict(depths=(1, 1))), 'one value per stage'),
    (dict(arch=dict(num_heads=(3, 2, 5, 8))), 'divide'),
    (dict(pe_type='learned'), 'accepted'),
    (dict(peg_position='first'), 'after_first'),
    (dict(peg_kernel_size=4), 'odd'),
    (dict(peg_kernel_size=1), 'odd'),
    (dict(norm_after_stage='all'), "'last'"),
    (dict(norm_after_stage=1), "'last'"),
    (dict(out_indices=(4,)), r'\[-4, 3\]'),
    (dict(out_indices=()), 'non-empty'),
    (dict(norm_cfg=dict(type='BN')), 'LN'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
    (dict(img_size=16), 'img_size'),
    (dict(in_channels=0), 'in_channels'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CPVTv2(**kwargs)


def test_drop_path_increases_linearly():
    model = CPVTv2(arch=TINY, drop_path_rate=0.2)
    rates = [blk.drop_path.drop_prob if hasattr(blk.drop_path, 'drop_prob') else 0.0
             for stage in model.blocks for blk in stage]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.2, sum(TINY['depths'])))


def test_registered():
    from mmengine.registry import MODELS
    model = MODELS.build(dict(type='CPVTv2', arch=TINY))
    assert isinstance(model, CPVTv2)


# ---------------------------------------------------------------------------------------------------------------
# Positional encodings
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('pe_type', PE_TYPES)
def test_every_pe_type_runs(pe_type):
    model = _tiny(pe_type=pe_type)
    names = [n for n, _ in model.named_parameters()]
    assert any('pos_block' in n for n in names) == (pe_type == 'peg')
    assert any('pos_embed' in n for n in names) == (pe_type in ('abs', 'abs_nointerp'))
    assert any('relative_position_bias_table' in n for n in names) == (pe_type == 'rel_bias')
    sizes = [(224, 224), (96, 160)] + ([(320, 288)] if pe_type != 'abs_nointerp' else [])
    for hw in sizes:
        with torch.no_grad():
            out = model(torch.randn(1, 3, *hw))
        assert out[-1].shape[-2:] == (math.ceil(hw[0] / 32), math.ceil(hw[1] / 32))


def test_none_has_no_pe_and_differs_from_peg():
    peg, none = _tiny(), _tiny(pe_type='none')
    assert peg.pos_block is not None and none.pos_block is None and none.pos_embed is None
    assert not [n for n, _ in none.named_parameters() if 'pos' in n]
    state = {k: v for k, v in peg.state_dict().items() if not k.startswith('pos_block')}
    none.load_state_dict(state)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert not torch.allclose(peg(x)[-1], none(x)[-1], atol=1e-4)
        for stage in range(4):  # zeroing the PEG convs makes it the PE-free model
            peg.pos_block[stage].proj[0].weight.zero_()
            peg.pos_block[stage].proj[0].bias.zero_()
        torch.testing.assert_close(peg(x)[-1], none(x)[-1], atol=1e-6, rtol=0)


def test_abs_tables_per_stage_and_resampled():
    model = _tiny(pe_type='abs', img_size=128)
    grids = [32, 16, 8, 4]
    for pe, grid, dims in zip(model.pos_embed, grids, TINY['embed_dims']):
        assert pe.pos_embed.shape == (1, grid * grid, dims)
    # At the pre-training size the tables are used as they are; elsewhere resampled to the grid.
    table = model.pos_embed[1]((20, 12))
    torch.testing.assert_close(table, resample_abs_pos_embed(model.pos_embed[1].pos_embed, (20, 12), (16, 16), 0))
    # Added after the patch embedding, before the blocks.
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad():
        tokens, hw = model.patch_embeds[0](x)
        tokens = tokens + model.pos_embed[0].pos_embed
        for block in model.blocks[0]:
            tokens = block(tokens, hw)
        torch.testing.assert_close(model(x)[0], tokens.transpose(1, 2).reshape(1, -1, *hw), atol=1e-6, rtol=0)


def test_abs_nointerp_crops_and_refuses_larger_grid():
    model = _tiny(pe_type='abs_nointerp', img_size=128)
    model(torch.randn(1, 3, 96, 128))
    with pytest.raises(ValueError, match='larger than the absolute PE grid'):
        model(torch.randn(1, 3, 160, 128))


def test_sincos_computed_for_the_grid_without_params():
    from vitpe_mm.layers import build_sincos_2d_pos_embed
    model = _tiny(pe_type='sincos')
    assert not [n for n, _ in model.named_parameters() if 'pos' in n]
    like = torch.zeros(1)
    torch.testing.assert_close(model.pos_embed[2]((5, 9), like), build_sincos_2d_pos_embed((5, 9), 40))
    assert model.pos_embed[2]((5, 9), like) is model.pos_embed[2]((5, 9), like)  # cached


def test_rel_bias_table_made_for_the_reduced_pretrain_grid():
    model = _tiny(pe_type='rel_bias', img_size=224)
    # key grids at 224: 56/8 = 28/4 = 14/2 = 7/1 = 7 -> (2*7-1)^2 rows
    for stage, heads in zip(model.rel_pos_bias, TINY['num_heads']):
        for table in stage:
            assert table.relative_position_bias_table.shape == (13 * 13, heads)
    with torch.no_grad():
        bias = model.rel_pos_bias[0][0]((20, 24), (2, 3))
    assert bias.shape == (1, 20 * 24, 6)
    # The bias changes the output: zeroing every table gives another result.
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        before = model(x)[-1]
        for stage in model.rel_pos_bias:
            for table in stage:
                table.relative_position_bias_table.zero_()
        assert not torch.allclose(model(x)[-1], before, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# PEG placement and kernel size
# ---------------------------------------------------------------------------------------------------------------

def test_peg_before_first_is_applied_to_the_stage_input():
    model = _tiny(peg_position='before_first', norm_after_stage=False)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        out = model(x)
        feat = x
        for i in range(4):
            tokens, hw = model.patch_embeds[i](feat)
            tokens = model.pos_block[i](tokens, hw)
            for block in model.blocks[i]:
                tokens = block(tokens, hw)
            feat = tokens.transpose(1, 2).reshape(1, -1, *hw)
            torch.testing.assert_close(out[i], feat, atol=1e-6, rtol=0)
        after = _tiny(peg_position='after_first', norm_after_stage=False)
        after.load_state_dict(model.state_dict())
        assert not torch.allclose(after(x)[0], out[0], atol=1e-4)


def test_peg_after_first_block():
    model = _tiny(norm_after_stage=False)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        tokens, hw = model.patch_embeds[0](x)
        tokens = model.blocks[0][0](tokens, hw)
        tokens = model.pos_block[0](tokens, hw)
        torch.testing.assert_close(model(x)[0], tokens.transpose(1, 2).reshape(1, -1, *hw), atol=1e-6, rtol=0)


def test_peg_every_block():
    model = _tiny(peg_position='every_block')
    assert [len(p) for p in model.pos_block] == list(TINY['depths'])
    assert 'pos_block.1.1.proj.0.weight' in model.state_dict()
    # With one block per stage it is the paper's placement (PEG after the first block).
    one = dict(TINY, depths=(1, 1, 1, 1))
    torch.manual_seed(0)
    every = _perturb(CPVTv2(arch=one, peg_position='every_block')).eval()
    first = CPVTv2(arch=one).eval()
    first.load_state_dict({k.replace('.0.proj', '.proj') if k.startswith('pos_block') else k: v
                           for k, v in every.state_dict().items()})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(every(x), first(x)):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
        # with two blocks in stage 1 the second PEG acts: zeroing it changes stage 1 only
        before = model(x)
        model.pos_block[1][1].proj[0].weight.zero_()
        model.pos_block[1][1].proj[0].bias.zero_()
        after = model(x)
    torch.testing.assert_close(after[0], before[0])
    assert not torch.allclose(after[1], before[1], atol=1e-4)


def test_peg_kernel_size():
    k3 = _tiny()
    k5 = _tiny(peg_kernel_size=5)
    assert k5.pos_block[0].proj[0].weight.shape == (16, 1, 5, 5)
    state = k3.state_dict()
    for i in range(4):  # a 3x3 kernel zero-padded to 5x5 is the same PEG
        state[f'pos_block.{i}.proj.0.weight'] = F.pad(state[f'pos_block.{i}.proj.0.weight'], (1, 1, 1, 1))
    k5.load_state_dict(state)
    x = torch.randn(1, 3, 64, 80)
    with torch.no_grad():
        for a, b in zip(k3(x), k5(x)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        k5.pos_block[0].proj[0].weight[:, :, 0, 0] += 1.0  # the outer ring now acts
        assert not torch.allclose(k3(x)[0], k5(x)[0], atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# Norms after stages, frozen stages, checkpointing
# ---------------------------------------------------------------------------------------------------------------

def test_norm_after_stage_options():
    last, none, every = _tiny(), _tiny(norm_after_stage=False), _tiny(norm_after_stage=True)
    assert 'norm.weight' in last.state_dict() and last.norm_list is None
    assert none.norm is None and none.norm_list is None
    assert every.norm is None and len(every.norm_list) == 4
    state = none.state_dict()
    last.load_state_dict(dict(state, **{f'norm.{k}': v for k, v in last.norm.state_dict().items()}))
    every.load_state_dict(dict(state, **{f'norm_list.{k}': v for k, v in every.norm_list.state_dict().items()}))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        raw, normed_last, normed_all = none(x), last(x), every(x)
        for i in range(3):  # intermediate stages are returned as they leave their blocks
            torch.testing.assert_close(normed_last[i], raw[i])
        ln = lambda m, t: m(t.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # noqa: E731
        torch.testing.assert_close(normed_last[3], ln(last.norm, raw[3]), atol=1e-6, rtol=0)
    # With norms after every stage the next stage sees normalised tokens, so only stage 0 can be compared.
    torch.testing.assert_close(normed_all[0], ln(every.norm_list[0], raw[0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize('frozen', [0, 2, 4])
def test_frozen_stages(frozen):
    model = CPVTv2(arch=TINY, frozen_stages=frozen, pe_type='peg')
    model.train()
    frozen_modules = [model.patch_embeds[i] for i in range(min(frozen + 1, 4))]
    frozen_modules += [model.blocks[i] for i in range(frozen)] + [model.pos_block[i] for i in range(frozen)]
    for m in frozen_modules:
        assert not m.training and all(not p.requires_grad for p in m.parameters())
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if frozen < 4:
        assert any(n.startswith(f'blocks.{frozen}.') for n in trainable)
        assert not any(n.startswith(f'blocks.{frozen - 1}.') for n in trainable) or frozen == 0
    else:
        assert trainable == []
    if trainable:
        sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
        for n, p in model.named_parameters():
            assert (p.grad is None) == (not p.requires_grad), n


def test_with_cp_same_outputs_and_grads():
    torch.manual_seed(0)
    ref = _perturb(CPVTv2(arch=TINY, drop_rate=0.0))
    cp_model = CPVTv2(arch=TINY, with_cp=True)
    cp_model.load_state_dict(ref.state_dict())
    ref.train(), cp_model.train()
    x = torch.randn(1, 3, 64, 64)
    out_ref, out_cp = ref(x), cp_model(x)
    for a, b in zip(out_ref, out_cp):
        torch.testing.assert_close(a, b)
    sum((o * o).mean() for o in out_ref).backward()
    sum((o * o).mean() for o in out_cp).backward()
    for (n, a), (_, b) in zip(ref.named_parameters(), cp_model.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=n)


def test_inference_repeats_and_follows_table_writes():
    # the resampled bias tables are recomputed every forward: a write through `.data` (EMA hooks) shows at once
    model = _tiny(pe_type='rel_bias')
    x = torch.randn(1, 3, 100, 100)
    with torch.no_grad():
        first = model(x)
        second = model(x)
        for stage in model.rel_pos_bias:
            for table in stage:
                table.relative_position_bias_table.data.mul_(3.0)
        third = model(x)
        fresh = _tiny(pe_type='rel_bias')
        fresh.load_state_dict(model.state_dict())
        expected = fresh(x)
    for a, b, c, e in zip(first, second, third, expected):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(c, e)
    assert not torch.allclose(first[-1], third[-1], atol=1e-5)

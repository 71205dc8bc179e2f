"""Checkpoint formats of the cpvt family (timm/official Twins, mmseg PCPVT) on tiny files written here."""
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F

from vitpe_mm.checkpoint import CheckpointError, detect_format, formats_for, load_pretrained
from vitpe_mm.layers import resample_abs_pos_embed, resize_rel_pos_bias_table
from vitpe_mm.models.cpvt import CPVTv2

from conftest import perturb

TINY = dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))


_perturb = partial(perturb, std=0.05)


@pytest.fixture(scope='module')
def timm_tiny():
    """A tiny timm Twins-PCPVT (same structure as twins_pcpvt_*, narrow and shallow) with a classifier head."""
    from timm.models.twins import Twins
    torch.manual_seed(0)
    return _perturb(Twins(embed_dims=TINY['embed_dims'], num_heads=TINY['num_heads'], mlp_ratios=TINY['mlp_ratios'],
                          depths=TINY['depths'], sr_ratios=(8, 4, 2, 1), num_classes=10)).eval()


def _timm_to_mmseg(state):
    """timm/official keys -> mmseg PCPVT keys, as mmseg's tools/model_converters/twins2mmseg.py (pcpvt)."""
    out = {}
    for k, v in state.items():
        if k.startswith('head') or '.attn.kv.' in k:
            continue
        if k.startswith('patch_embeds'):
            k = k.replace('.proj.', '.projection.')
        elif k.startswith('blocks'):
            if '.attn.q.' in k:
                v = torch.cat([v, state[k.replace('.attn.q.', '.attn.kv.')]], dim=0)
                k = k.replace('.attn.q.', '.attn.attn.in_proj_')
            k = (k.replace('mlp.fc1', 'ffn.layers.0.0').replace('mlp.fc2', 'ffn.layers.1')
                 .replace('attn.proj.', 'attn.attn.out_proj.').replace('blocks.', 'layers.'))
        elif k.startswith('pos_block'):
            k = k.replace('pos_block', 'position_encodings').replace('proj.0.', 'proj.')
        out[k] = v
    return out


def _write(tmp_path, obj, name='ckpt.pth'):
    path = tmp_path / name
    torch.save(obj, path)
    return str(path)


def _features(timm_model, x):
    return timm_model.forward_intermediates(x, norm=True, intermediates_only=True)


def test_formats_registered():
    assert formats_for('cpvt') == ('timm', 'mmseg')


def test_timm_format_drops_head_and_matches(tmp_path, timm_tiny):
    state = timm_tiny.state_dict()
    assert 'head.weight' in state
    assert detect_format(state, 'cpvt') == 'timm'
    model = CPVTv2(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=_write(tmp_path, state)))
    model.init_weights()
    report = load_pretrained(model, _write(tmp_path, state), 'cpvt')
    assert report == {'format': 'timm', 'missing_keys': [], 'unexpected_keys': []}
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        for o, r in zip(model.eval()(x), _features(timm_tiny, x)):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=0)


def test_mmseg_format_splits_in_proj(tmp_path, timm_tiny):
    state = _timm_to_mmseg(timm_tiny.state_dict())
    assert 'layers.0.0.attn.attn.in_proj_weight' in state and 'position_encodings.0.proj.weight' in state
    assert detect_format(state, 'cpvt') == 'mmseg'
    # an mmseg segmentor checkpoint: backbone.* next to the heads, under 'state_dict', with meta
    wrapped = {'meta': {'epoch': 1}, 'state_dict': {**{f'backbone.{k}': v for k, v in state.items()},
                                                    'decode_head.conv_seg.weight': torch.zeros(2, 4, 1, 1)}}
    model = CPVTv2(arch=TINY)
    report = load_pretrained(model, _write(tmp_path, wrapped), 'cpvt')
    # twins2mmseg keeps timm's final norm under `norm`, which our default final norm takes
    assert report == {'format': 'mmseg', 'missing_keys': [], 'unexpected_keys': []}
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for o, r in zip(model.eval()(x), _features(timm_tiny, x)):
            torch.testing.assert_close(o, r, atol=1e-5, rtol=0)
    sd = model.state_dict()
    torch.testing.assert_close(sd['blocks.1.1.attn.q.weight'], state['layers.1.1.attn.attn.in_proj_weight'][:32])
    torch.testing.assert_close(sd['blocks.1.1.attn.kv.bias'], state['layers.1.1.attn.attn.in_proj_bias'][32:])


def test_mmseg_norm_list_into_models_with_other_norm_placements(tmp_path):
    torch.manual_seed(0)
    src = _perturb(CPVTv2(arch=TINY, norm_after_stage=True))
    mmseg_state = {}
    for k, v in _timm_to_mmseg({**src.state_dict()}).items():
        mmseg_state[k] = v
    assert 'norm_list.3.weight' in mmseg_state and detect_format(mmseg_state, 'cpvt') == 'mmseg'
    path = _write(tmp_path, mmseg_state)
    same = CPVTv2(arch=TINY, norm_after_stage=True)
    assert load_pretrained(same, path, 'cpvt')['unexpected_keys'] == []
    torch.testing.assert_close(same.norm_list[2].weight, src.norm_list[2].weight)
    last = CPVTv2(arch=TINY)  # final norm <- norm_list.3; the other stage norms have no slot
    with pytest.raises(CheckpointError, match=r'norm_list\.0\.weight'):
        load_pretrained(last, path, 'cpvt')
    report = load_pretrained(last, path, 'cpvt', allow_unexpected=True)
    assert sorted(report['unexpected_keys']) == [f'norm_list.{i}.{p}' for i in range(3) for p in ('bias', 'weight')]
    torch.testing.assert_close(last.norm.weight, src.norm_list[3].weight)


def test_final_norm_dropped_for_models_without_stage_norms(tmp_path, timm_tiny):
    # mmseg's Twins configs (norm_after_stage=False) load ImageNet checkpoints holding the final norm.
    for state in (timm_tiny.state_dict(), _timm_to_mmseg(timm_tiny.state_dict())):
        assert 'norm.weight' in state
        model = CPVTv2(arch=TINY, norm_after_stage=False)
        report = load_pretrained(model, _write(tmp_path, state), 'cpvt')
        assert report['missing_keys'] == report['unexpected_keys'] == []


def test_timm_final_norm_into_norm_list_model(tmp_path, timm_tiny):
    model = CPVTv2(arch=TINY, norm_after_stage=True)
    report = load_pretrained(model, _write(tmp_path, timm_tiny.state_dict()), 'cpvt')
    assert report['unexpected_keys'] == []
    assert sorted(report['missing_keys']) == [f'norm_list.{i}.{p}' for i in range(3) for p in ('bias', 'weight')]
    torch.testing.assert_close(model.norm_list[3].weight, timm_tiny.norm.weight)


def test_timm_peg_into_every_block_model(tmp_path, timm_tiny):
    model = CPVTv2(arch=TINY, peg_position='every_block')
    report = load_pretrained(model, _write(tmp_path, timm_tiny.state_dict()), 'cpvt')
    assert report['unexpected_keys'] == []
    assert report['missing_keys'] == ['pos_block.1.1.proj.0.weight', 'pos_block.1.1.proj.0.bias']
    torch.testing.assert_close(model.pos_block[2][0].proj[0].weight, timm_tiny.pos_block[2].proj[0].weight)


def test_peg_checkpoint_into_pe_free_model_needs_allow_unexpected(tmp_path, timm_tiny):
    path = _write(tmp_path, timm_tiny.state_dict())
    with pytest.raises(CheckpointError, match=r'pos_block\.0\.proj\.0\.weight'):
        load_pretrained(CPVTv2(arch=TINY, pe_type='none'), path, 'cpvt')
    model = CPVTv2(arch=TINY, pe_type='none', init_cfg=dict(type='Pretrained', checkpoint=path, allow_unexpected=True))
    model.init_weights()
    report = load_pretrained(model, path, 'cpvt', allow_unexpected=True)
    assert report['missing_keys'] == []
    assert sorted(report['unexpected_keys']) == sorted(f'pos_block.{i}.proj.0.{p}' for i in range(4)
                                                       for p in ('weight', 'bias'))


def test_own_state_dict_round_trip_every_option(tmp_path):
    for kwargs in (dict(pe_type='abs'), dict(pe_type='rel_bias'), dict(peg_position='every_block'),
                   dict(norm_after_stage=True, peg_kernel_size=5)):
        torch.manual_seed(0)
        src = _perturb(CPVTv2(arch=TINY, **kwargs)).eval()
        model = CPVTv2(arch=TINY, **kwargs).eval()
        report = load_pretrained(model, _write(tmp_path, src.state_dict()), 'cpvt')
        # our own keys: loaded as they are ('vitpe_mm'); also through the timm converter
        assert report == {'format': 'vitpe_mm', 'missing_keys': [], 'unexpected_keys': []}, kwargs
        report = load_pretrained(model, _write(tmp_path, src.state_dict()), 'cpvt', fmt='timm')
        assert report == {'format': 'timm', 'missing_keys': [], 'unexpected_keys': []}, kwargs
        x = torch.randn(1, 3, 64, 64)
        with torch.no_grad():
            torch.testing.assert_close(model(x)[-1], src(x)[-1])


def test_abs_pos_embed_from_another_grid_is_resampled(tmp_path):
    torch.manual_seed(0)
    src = _perturb(CPVTv2(arch=TINY, pe_type='abs', img_size=224))
    model = CPVTv2(arch=TINY, pe_type='abs', img_size=320)
    load_pretrained(model, _write(tmp_path, src.state_dict()), 'cpvt')
    for i, grid in enumerate((80, 40, 20, 10)):
        expected = resample_abs_pos_embed(src.pos_embed[i].pos_embed.detach(), (grid, grid), num_prefix_tokens=0)
        torch.testing.assert_close(model.pos_embed[i].pos_embed.detach(), expected)


def test_rel_bias_table_from_another_grid_is_resampled(tmp_path):
    torch.manual_seed(0)
    src = _perturb(CPVTv2(arch=TINY, pe_type='rel_bias', img_size=224))  # key grids 7x7
    model = CPVTv2(arch=TINY, pe_type='rel_bias', img_size=320)  # key grids 10x10
    load_pretrained(model, _write(tmp_path, src.state_dict()), 'cpvt')
    table = model.rel_pos_bias[1][1].relative_position_bias_table
    assert table.shape == (19 * 19, 2)
    expected = resize_rel_pos_bias_table(src.rel_pos_bias[1][1].relative_position_bias_table.detach(),
                                         (10, 10))
    torch.testing.assert_close(table.detach(), expected)


def test_unrecognisable_checkpoint_names_keys(tmp_path):
    with pytest.raises(CheckpointError, match=r'(?s)cpvt.*stem\.conv\.weight.*timm, mmseg'):
        load_pretrained(CPVTv2(arch=TINY), _write(tmp_path, {'stem.conv.weight': torch.zeros(1)}), 'cpvt')


def test_unknown_keys_in_a_known_format_are_named(tmp_path, timm_tiny):
    state = dict(timm_tiny.state_dict(), **{'blocks.0.0.attn.qkv.weight': torch.zeros(48, 16)})
    with pytest.raises(CheckpointError, match=re.escape('blocks.0.0.attn.qkv.weight')):
        load_pretrained(CPVTv2(arch=TINY), _write(tmp_path, state), 'cpvt')
    # an explicit but wrong format
    with pytest.raises(CheckpointError, match='mmseg Twins-PCPVT layout'):
        load_pretrained(CPVTv2(arch=TINY), _write(tmp_path, timm_tiny.state_dict()), 'cpvt', fmt='mmseg')


def test_wrong_shapes_are_named(tmp_path, timm_tiny):
    narrow = dict(TINY, embed_dims=(8, 32, 40, 64))
    with pytest.raises(CheckpointError, match=r'patch_embeds\.0\.proj\.weight: checkpoint \(16, 3, 4, 4\)'):
        load_pretrained(CPVTv2(arch=narrow), _write(tmp_path, timm_tiny.state_dict()), 'cpvt')
    with pytest.raises(CheckpointError, match=r'pos_block\.0\.proj\.0\.weight'):
        load_pretrained(CPVTv2(arch=TINY, peg_kernel_size=5), _write(tmp_path, timm_tiny.state_dict()), 'cpvt')


def test_zero_padded_peg_kernel_is_the_same_model(tmp_path, timm_tiny):
    # A 3x3 PEG from a checkpoint, zero-padded by hand to 5x5, gives the same features.
    state = timm_tiny.state_dict()
    state = {k: (F.pad(v, (1, 1, 1, 1)) if k.startswith('pos_block') and k.endswith('weight') else v)
             for k, v in state.items()}
    model = CPVTv2(arch=TINY, peg_kernel_size=5).eval()
    load_pretrained(model, _write(tmp_path, state), 'cpvt')
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], _features(timm_tiny, x)[-1], atol=1e-5, rtol=0)


@pytest.mark.parametrize('to_mmseg', [False, True])
def test_allow_unexpected_lets_keys_outside_the_layout_pass(tmp_path, timm_tiny, to_mmseg):
    """Keys outside the Twins layout (layer scale here) are refused by name, or ignored with allow_unexpected."""
    extra = {'blocks.0.0.ls1.gamma': torch.ones(16)} if not to_mmseg else {'layers.0.0.ls1.gamma': torch.ones(16)}
    state = timm_tiny.state_dict()
    state = dict(_timm_to_mmseg(state) if to_mmseg else state, **extra)
    path = _write(tmp_path, state)
    with pytest.raises(CheckpointError,
                       match=r'(?s)1 key\(s\) do not belong to CPVTv2: \S*ls1\.gamma.*allow_unexpected'):
        load_pretrained(CPVTv2(arch=TINY), path, 'cpvt')
    model = CPVTv2(arch=TINY, init_cfg=dict(type='Pretrained', checkpoint=path, allow_unexpected=True)).eval()
    model.init_weights()
    assert load_pretrained(CPVTv2(arch=TINY), path, 'cpvt', allow_unexpected=True)['unexpected_keys'] == list(extra)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x)[-1], _features(timm_tiny, x)[-1], atol=1e-5, rtol=0)


def test_allow_unexpected_does_not_hide_a_wrong_format(tmp_path, timm_tiny):
    path = _write(tmp_path, timm_tiny.state_dict())
    with pytest.raises(CheckpointError, match='not in the mmseg Twins-PCPVT layout'):
        load_pretrained(CPVTv2(arch=TINY), path, 'cpvt', fmt='mmseg', allow_unexpected=True)
    with pytest.raises(CheckpointError, match=r'none of its 1 key\(s\) belongs to CPVTv2'):
        load_pretrained(CPVTv2(arch=TINY), _write(tmp_path, {'foo.weight': torch.zeros(1)}), 'cpvt', fmt='vitpe_mm',
                        allow_unexpected=True)

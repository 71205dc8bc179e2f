"""SwinRPB: equivalence with timm / MMDetection Swin, any input size, small maps, PE types, options."""
from functools import partial

import pytest
import torch

from vitpe_mm.layers import (
    PE_TYPES,
    BlockSpec,
    StageSpec,
    build_pos_encoding,
    build_sincos_2d_pos_embed,
    resize_rel_pos_bias_table,
)
from vitpe_mm.models.swin import ARCH_SETTINGS, SwinRPB, WindowAttention, stage_window_and_shift

from conftest import perturb

# Narrow and shallow, same structure as the presets (patch 4, window 7, 4 stages, 2 blocks where shifts matter).
TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
TIMM_TINY = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
MMDET_TINY = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4))
STRIDES = (4, 8, 16, 32)

def _ceil(a: int, b: int) -> int:
    return -(-a // b)

_perturb = partial(perturb, std=0.05)  # random weights everywhere (biases, norms, bias tables)

def _tiny(**kwargs) -> SwinRPB:
    torch.manual_seed(0)
    kwargs.setdefault('drop_path_rate', 0.0)
    return _perturb(SwinRPB(arch=TINY, **kwargs)).eval()

def _load(state, tmp_path, name='ckpt.pth', **kwargs) -> SwinRPB:
    path = tmp_path / name
    torch.save({k: v.clone() for k, v in state.items()}, path)
    kwargs.setdefault('drop_path_rate', 0.0)
    model = SwinRPB(init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kwargs)
    model.init_weights()
    return model.eval()

def _window_rel_bias(embed_dims: int, num_heads: int, window):
    """A stand-alone window relative-bias encoding for one block: (encodings, its RelativePositionBias)."""
    pe = build_pos_encoding('rel_bias', [StageSpec(embed_dims, num_heads, window, (BlockSpec(window_size=window),))])
    return pe, pe.parts[0][0][0]


def _block_pe(pe, hw):
    return pe.block(pe.prepare(0, hw, torch.zeros(1)), 0)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()

# ---------------------------------------------------------------------------------------------------------------
# timm 1.0 SwinTransformer (final stage = timm's forward_features, final norm -> our norm3)
# ---------------------------------------------------------------------------------------------------------------

def _timm_swin(img_size, **kwargs):
    timm = pytest.importorskip('timm')
    torch.manual_seed(0)
    # strict_img_size=False -> dynamic masks; windows are fixed by img_size at construction, so each size
    # under test gets a model built for it (timm clamps windows to the maps of img_size).
    ref = timm.create_model('swin_tiny_patch4_window7_224', pretrained=False, strict_img_size=False,
                            img_size=img_size, **kwargs)
    return _perturb(ref).eval()

@pytest.mark.slow  # the real Swin-T (28M parameters): a few seconds
def test_swin_t_preset_matches_timm_224(tmp_path):
    """The real Swin-T at 224x224: our out index 3 == timm forward_features (norm included)."""
    ref = _timm_swin(224)
    ours = _load(ref.state_dict(), tmp_path, arch='tiny')
    assert ours.out_channels == (96, 192, 384, 768)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = ref.forward_features(x).permute(0, 3, 1, 2)
        out = ours(x)[-1]
    print(f'timm swin_tiny 224x224 stage 3: max abs diff {_max_diff(out, expected):.3g}')
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

@pytest.mark.parametrize('hw', [(224, 224), (448, 448), (224, 448)])
def test_matches_timm_sizes(hw, tmp_path):
    """Larger and non-square sizes where timm supports them (maps divisible by the window)."""
    ref = _timm_swin(hw, **TIMM_TINY)
    ours = _load(ref.state_dict(), tmp_path, arch=TINY)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        expected = ref.forward_features(x).permute(0, 3, 1, 2)
        out = ours(x)[-1]
    print(f'timm tiny-arch {hw}: max abs diff {_max_diff(out, expected):.3g}')
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)

def test_timm_differs_at_non_divisible_maps_only_in_shifted_blocks(tmp_path):
    """At 320x320 (80x80 map, not a multiple of 7) timm rolls then pads; we pad then roll (official detection
    code, mmdet). With one (unshifted) block per stage both agree; with shifted blocks they differ."""
    hw = (320, 320)
    x = torch.randn(1, 3, *hw)
    one = dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4))
    ref = _timm_swin(hw, **one)
    ours = _load(ref.state_dict(), tmp_path, arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)))
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[-1], ref.forward_features(x).permute(0, 3, 1, 2), atol=1e-5, rtol=0)
    ref = _timm_swin(hw, **TIMM_TINY)
    ours = _load(ref.state_dict(), tmp_path, 'shifted.pth', arch=TINY)
    with torch.no_grad():
        diff = _max_diff(ours(x)[-1], ref.forward_features(x).permute(0, 3, 1, 2))
    print(f'timm tiny-arch 320x320 (roll-then-pad vs pad-then-roll): max abs diff {diff:.3g}')
    assert diff > 1e-3

# ---------------------------------------------------------------------------------------------------------------
# MMDetection SwinTransformer (its own keys; all four stages)
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def mmdet_swin():
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    from mmdet.models.backbones.swin import SwinTransformer
    torch.manual_seed(0)
    ref = _perturb(SwinTransformer(**MMDET_TINY, drop_path_rate=0.0, out_indices=(0, 1, 2, 3)))
    ref.eval()  # mmdet's train() returns None
    return ref

@pytest.mark.parametrize('hw, clamp_window', [
    ((224, 224), False), ((448, 448), False), ((224, 320), False), ((333, 517), False),
    ((256, 320), True), ((333, 517), True),
])
def test_matches_mmdet_all_stages(mmdet_swin, hw, clamp_window, tmp_path):
    """clamp_window=False is mmdet's convention everywhere; the default agrees wherever every map is larger
    than the window (333x517 included: both pad bottom/right, then roll)."""
    ours = _load(mmdet_swin.state_dict(), tmp_path, arch=TINY, clamp_window=clamp_window)
    x = torch.randn(1, 3, *hw)
    with torch.no_grad():
        expected = mmdet_swin(x)
        outs = ours(x)
    assert len(outs) == 4
    for i, (out, exp) in enumerate(zip(outs, expected)):
        print(f'mmdet {hw} clamp_window={clamp_window} stage {i}: max abs diff {_max_diff(out, exp):.3g}')
        assert out.shape == (1, 16 * 2 ** i, _ceil(hw[0], STRIDES[i]), _ceil(hw[1], STRIDES[i]))
        torch.testing.assert_close(out, exp, atol=1e-5, rtol=0)

@pytest.mark.slow  # the real Swin-T (28M parameters): a few seconds
def test_swin_t_preset_matches_mmdet_224(tmp_path):
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    from mmdet.models.backbones.swin import SwinTransformer
    torch.manual_seed(0)
    ref = _perturb(SwinTransformer(drop_path_rate=0.0))
    ref.eval()  # mmdet's train() returns None
    ours = _load(ref.state_dict(), tmp_path, clamp_window=False)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for i, (out, exp) in enumerate(zip(ours(x), ref(x))):
            print(f'mmdet Swin-T 224x224 stage {i}: max abs diff {_max_diff(out, exp):.3g}')
            torch.testing.assert_close(out, exp, atol=1e-5, rtol=0)

def test_small_map_rule_differs_from_mmdet_only_on_the_small_map(mmdet_swin, tmp_path):
    """At 224x224 the last map is 7x7: the official rule (one unshifted window) and mmdet (a shifted,
    masked window) agree on stages 0-2 and differ on stage 3."""
    ours = _load(mmdet_swin.state_dict(), tmp_path, arch=TINY)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        outs, expected = ours(x), mmdet_swin(x)
    for i in range(3):
        torch.testing.assert_close(outs[i], expected[i], atol=1e-5, rtol=0)
    diff = _max_diff(outs[3], expected[3])
    print(f'mmdet 224x224 stage 3 with clamp_window=True: max abs diff {diff:.3g}')
    assert diff > 1e-3

# ---------------------------------------------------------------------------------------------------------------
# Any input size
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('hw', [(224, 224), (512, 512), (480, 640), (333, 517), (64, 64), (4, 4), (5, 97)])
@pytest.mark.parametrize('clamp_window', [True, False])
def test_any_input_size(hw, clamp_window):
    model = _tiny(clamp_window=clamp_window)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *hw))
    assert model.out_channels == (16, 32, 64, 128)
    for i, out in enumerate(outs):
        assert out.shape == (1, model.out_channels[i], _ceil(hw[0], STRIDES[i]), _ceil(hw[1], STRIDES[i]))
        assert torch.isfinite(out).all()

@pytest.mark.parametrize('hw', [(3, 3), (4, 3), (2, 100)])
def test_below_one_patch_raises(hw):
    with pytest.raises(ValueError, match='at least 4x4'):
        _tiny()(torch.randn(1, 3, *hw))

def test_wrong_channels_raise():
    with pytest.raises(ValueError, match='in_channels=3'):
        _tiny()(torch.randn(1, 1, 64, 64))

def test_extra_content_reaches_only_the_windows_that_hold_it():
    """Windows are anchored at the top-left: a 224x224 image and the same image extended to 252x252 give the
    same first map (56x56 vs 63x63 tokens) except in the last shifted-window band (rows/cols >= 52), whose
    windows now hold the extra tokens."""
    model = _tiny(out_indices=(0,))
    x = torch.randn(1, 3, 224, 224)
    big = torch.nn.functional.pad(x, (0, 28, 0, 28))
    with torch.no_grad():
        a, = model(x)
        b, = model(big)
    torch.testing.assert_close(a[..., :52, :52], b[..., :52, :52], atol=1e-5, rtol=0)
    assert _max_diff(a[..., 52:, 52:], b[..., 52:56, 52:56]) > 1e-4

# ---------------------------------------------------------------------------------------------------------------
# Windows on small maps, bias crop, window size
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('hw, shifted, clamp, expected', [
    ((56, 56), True, True, ((7, 7), (3, 3))),
    ((8, 8), True, True, ((7, 7), (3, 3))),
    ((7, 7), True, True, ((7, 7), (0, 0))),      # official: min(resolution) <= window -> no shift
    ((5, 5), True, True, ((5, 5), (0, 0))),
    ((7, 14), True, True, ((7, 7), (0, 3))),     # per axis, as timm
    ((3, 20), False, True, ((3, 7), (0, 0))),
    ((7, 7), True, False, ((7, 7), (3, 3))),     # mmdet: keep window and shift, pad
    ((5, 5), True, False, ((7, 7), (3, 3))),
    ((5, 5), False, False, ((7, 7), (0, 0))),
])
def test_stage_window_and_shift(hw, shifted, clamp, expected):
    assert stage_window_and_shift(hw, (7, 7), shifted, clamp) == expected

@pytest.mark.parametrize('hw', [(7, 14), (14, 7), (5, 21), (1, 22), (20, 3), (14, 14)])
def test_shift_masks_match_timm_including_one_axis_shifts(hw):
    """timm's block mask (window/shift clamped per axis for its input resolution) == ours, as 0 / masked."""
    pytest.importorskip('timm')
    from timm.models.swin_transformer import SwinTransformerBlock

    from vitpe_mm.layers import padded_size, shifted_window_attn_mask
    block = SwinTransformerBlock(8, input_resolution=hw, num_heads=1, window_size=7, shift_size=3)
    window, shift = stage_window_and_shift(hw, (7, 7), True, True)
    assert (window, shift) == (tuple(block.window_size), tuple(block.shift_size))
    if not any(shift):
        assert block.attn_mask is None
        return
    ours = shifted_window_attn_mask(padded_size(hw, window), window, shift)
    assert torch.equal(torch.isinf(ours), block.attn_mask != 0)

def test_small_window_bias_is_a_crop_of_the_table():
    torch.manual_seed(0)
    pe, module = _window_rel_bias(8, 2, (7, 7))
    table = module.relative_position_bias_table
    bias = WindowAttention.window_bias(_block_pe(pe, (3, 5)), (3, 5), None)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(5), indexing='ij')
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[:, None] - ys[None, :] + 6) * 13 + (xs[:, None] - xs[None, :] + 6)
    torch.testing.assert_close(bias, table[index].permute(2, 0, 1))

def test_small_map_equals_single_unshifted_window():
    """With clamping, a 5x5 map is one window: shifted and plain blocks compute the same thing there."""
    model = _tiny(out_indices=(0,))
    with torch.no_grad():
        x, hw = model.patch_embed(torch.randn(1, 3, 20, 20))  # 5x5 tokens
        block0, block1 = model.layers[0].blocks
        block1.load_state_dict(block0.state_dict())
        torch.testing.assert_close(block1(x, hw), block0(x, hw))

@pytest.mark.parametrize('window_size', [(6, 8), 5, 12])
def test_other_window_sizes(window_size):
    model = _tiny(window_size=window_size)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 200, 300))
    assert [o.shape[-2:] for o in outs] == [(_ceil(200, s), _ceil(300, s)) for s in STRIDES]

def test_checkpoint_with_another_window_resamples_tables(tmp_path):
    src = _tiny()
    ours = _load(src.state_dict(), tmp_path, arch=TINY, window_size=12)
    key = 'rel_pos_bias.1.0.relative_position_bias_table'
    assert ours.state_dict()[key].shape == (23 * 23, 2)
    torch.testing.assert_close(ours.state_dict()[key], resize_rel_pos_bias_table(src.state_dict()[key], 12))
    with torch.no_grad():
        assert all(torch.isfinite(o).all() for o in ours(torch.randn(1, 3, 96, 160)))

# ---------------------------------------------------------------------------------------------------------------
# Positional encodings
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('pe_type', PE_TYPES)
def test_pe_types_any_size(pe_type):
    model = _tiny(pe_type=pe_type)
    sizes = [(224, 224), (96, 160)] if pe_type == 'abs_nointerp' else [(224, 224), (333, 517), (64, 64)]
    for hw in sizes:
        with torch.no_grad():
            outs = model(torch.randn(1, 3, *hw))
        assert outs[-1].shape == (1, 128, _ceil(hw[0], 32), _ceil(hw[1], 32))
    names = [n for n, _ in model.named_parameters()]
    assert any('relative_position_bias_table' in n for n in names) == (pe_type == 'rel_bias')
    assert any(n.startswith('pos_embed.') for n in names) == (pe_type in ('abs', 'abs_nointerp'))
    assert [n for n in names if 'pos_block' in n] == (
        [f'pos_block.{i}.proj.0.{p}' for i in range(4) for p in ('weight', 'bias')] if pe_type == 'peg' else [])

def test_abs_pe_grid_and_resampling():
    model = _tiny(pe_type='abs', pretrain_img_size=224)
    assert model.pos_embed[0].pos_embed.shape == (1, 56 * 56, 16)
    with torch.no_grad():
        table = model.pos_embed[0]((30, 40)).clone()
        assert table.shape == (1, 1200, 16)
        model.pos_embed[0].pos_embed.data.add_(1.0)  # as EMA hooks write: recomputed, not cached
        torch.testing.assert_close(model.pos_embed[0]((30, 40)), table + 1.0, atol=1e-5, rtol=0)

def test_abs_nointerp_rejects_larger_grid():
    model = _tiny(pe_type='abs_nointerp', pretrain_img_size=128)
    with pytest.raises(ValueError, match='larger than the absolute PE grid'):
        model(torch.randn(1, 3, 160, 128))

def test_sincos_is_added_after_patch_embed():
    model = _tiny(pe_type='sincos', out_indices=(0,))
    tokens = torch.zeros(1, 6 * 9, 16)
    pe = model.pos_encoding
    torch.testing.assert_close(pe.add_to_tokens(tokens, (6, 9), 0, pe.prepare(0, (6, 9), tokens)),
                               build_sincos_2d_pos_embed((6, 9), 16))

def test_peg_as_last_block_of_a_stage_feeds_patch_merging():
    """With one block per stage the PEG output (a channels-first view) goes straight into patch merging."""
    torch.manual_seed(0)
    model = SwinRPB(arch=dict(embed_dims=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4)), pe_type='peg').eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 66, 94))
    assert [o.shape[-2:] for o in outs] == [(_ceil(66, s), _ceil(94, s)) for s in STRIDES]

def test_peg_follows_the_first_block_of_each_stage():
    model = _tiny(pe_type='peg')
    order = []
    for i, stage in enumerate(model.layers):
        for j, block in enumerate(stage.blocks):
            block.register_forward_hook(lambda *a, n=f'{i}.block{j}': order.append(n))
        model.pos_block[i].register_forward_hook(lambda *a, n=f'{i}.peg': order.append(n))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert order == [f'{i}.{n}' for i in range(4) for n in ('block0', 'peg', 'block1')]

# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch, dims', [('tiny', 96), ('small', 96), ('base', 128), ('large', 192)])
def test_presets(arch, dims):
    with torch.device('meta'):  # structure only: no memory, no initialisation cost
        model = SwinRPB(arch=arch)
    assert model.out_channels == tuple(dims * 2 ** i for i in range(4))
    assert [len(s.blocks) for s in model.layers] == list(ARCH_SETTINGS[arch]['depths'])
    assert model.layers[0].blocks[0].attn.num_heads == ARCH_SETTINGS[arch]['num_heads'][0]

@pytest.mark.parametrize('kwargs, match', [
    (dict(arch='huge'), 'tiny, small, base, large'),
    (dict(arch=dict(embed_dims=16, depths=(1,), num_heads=(1,), mlp_ratio=2)), "unknown: \\['mlp_ratio'\\]"),
    (dict(arch=dict(embed_dims=16, depths=(1,))), "missing: \\['num_heads'\\]"),
    (dict(arch=dict(embed_dims=16, depths=(1, 1), num_heads=(1,))), 'equal'),
    (dict(arch=dict(embed_dims=16, depths=(1,), num_heads=(3,)), out_indices=(0,)), 'does not divide'),
    (dict(out_indices=(0, 4)), 'out_indices'),
    (dict(frozen_stages=5), 'frozen_stages'),
    (dict(pe_type='rope'), 'pe_type'),
    (dict(window_size=0), 'window_size'),
    (dict(drop_path_rate=1.0), 'drop_path_rate'),
])
def test_bad_arguments(kwargs, match):
    kwargs.setdefault('arch', TINY)
    with pytest.raises(ValueError, match=match):
        SwinRPB(**kwargs)

def test_out_indices_subset_builds_only_needed_stages():
    model = _tiny(out_indices=(1,))
    assert len(model.layers) == 2 and model.layers[1].downsample is None
    assert model.out_channels == (32,)
    outs = model(torch.randn(1, 3, 64, 64))
    assert len(outs) == 1 and outs[0].shape == (1, 32, 8, 8)

def test_frozen_stages():
    model = _tiny(frozen_stages=2)
    model.train()
    frozen = [model.patch_embed, model.layers[0], model.layers[1], model.norm0, model.norm1, *model.rel_pos_bias[0],
              *model.rel_pos_bias[1]]
    for m in frozen:
        assert not m.training
        assert all(not p.requires_grad for p in m.parameters())
    assert model.layers[2].training and all(p.requires_grad for p in model.layers[2].parameters())
    sum(o.sum() for o in model(torch.randn(1, 3, 64, 64))).backward()
    assert all(p.grad is None for m in frozen for p in m.parameters())
    assert model.layers[2].blocks[0].attn.qkv.weight.grad is not None

def test_with_cp_same_outputs_and_gradients(monkeypatch):
    import vitpe_mm.models.swin as swin_module
    calls = []
    checkpoint = swin_module.cp.checkpoint
    monkeypatch.setattr(swin_module.cp, 'checkpoint', lambda *a, **k: calls.append(1) or checkpoint(*a, **k))
    plain = _tiny().train()
    ckpt = _tiny(with_cp=True).train()
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 64)
    outs_a, outs_b = plain(x), ckpt(x)
    assert len(calls) == 8  # one per block
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b)
    sum(o.square().sum() for o in outs_a).backward()
    sum(o.square().sum() for o in outs_b).backward()
    for (name, pa), pb in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad, msg=name)

def test_drop_path_increases_linearly():
    model = SwinRPB(arch=TINY, drop_path_rate=0.3)
    rates = [getattr(b.drop_path, 'drop_prob', 0.0) for s in model.layers for b in s.blocks]
    torch.testing.assert_close(torch.tensor(rates), torch.linspace(0, 0.3, 8))

def test_inference_reuses_the_mask_and_recomputes_the_bias():
    from vitpe_mm.layers import padded_size, shifted_window_attn_mask
    model = _tiny()
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        first = model(x)
        second = model(x)
        # the shift mask depends on sizes only: built once, cached (24 x 32 tokens in stage 0, window 7, shift 3)
        mask = shifted_window_attn_mask(padded_size((24, 32), (7, 7)), (7, 7), (3, 3))
        assert shifted_window_attn_mask(padded_size((24, 32), (7, 7)), (7, 7), (3, 3)) is mask
        model.rel_pos_bias[0][1].relative_position_bias_table.data.mul_(2.0)  # EMA-style write
        third = model(x)
    for a, b in zip(first, second):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(first[0], third[0], atol=1e-6)

def test_registered_in_mmengine_root_registry():
    from mmengine.registry import MODELS
    model = MODELS.build(dict(type='SwinRPB', arch=TINY, out_indices=(3,)))
    assert isinstance(model, SwinRPB) and model.out_channels == (128,)

@pytest.mark.parametrize('hw, window, shift', [((10, 13), (7, 7), (3, 3)), ((14, 14), (7, 7), (0, 0)),
                                               ((5, 9), (5, 7), (0, 3)), ((16, 16), (7, 7), (3, 3))])
def test_compile_path_equals_cached_gathers_with_gradients(hw, window, shift):
    """Under torch.compile the windows are plain pad / roll / partition; both paths give the same values."""
    from vitpe_mm.models.swin import WindowAttention
    torch.manual_seed(0)
    attn = WindowAttention(16, 2, (7, 7))
    pe, module = _window_rel_bias(16, 2, (7, 7))
    block_pe = _block_pe(pe, hw)
    with torch.no_grad():
        module.relative_position_bias_table.normal_()
        attn.qkv.bias.normal_()  # padding tokens carry this bias on both paths
    x = torch.randn(2, hw[0] * hw[1], 16, requires_grad=True)
    mask = None
    if shift != (0, 0):
        from vitpe_mm.layers import padded_size, shifted_window_attn_mask
        mask = shifted_window_attn_mask(padded_size(hw, window), window, shift)
    gathered = attn.forward_map(x, hw, window, shift, block_pe)
    plain = attn.proj(attn._windows_plain(x, hw, window, shift, mask, block_pe))
    torch.testing.assert_close(plain, gathered, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(gathered)
    params = [x, attn.qkv.weight, attn.qkv.bias, module.relative_position_bias_table]
    for a, b in zip(torch.autograd.grad(plain, params, grad), torch.autograd.grad(gathered, params, grad)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)

def test_bf16_autocast_matches_padded_reference_computation():
    """Under CPU autocast the padding tokens' q, k, v are the bias in bf16 (was: a dtype error in the gather)."""
    torch.manual_seed(0)
    model = SwinRPB(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), drop_path_rate=0.0)
    x = torch.randn(1, 3, 100, 70, requires_grad=True)  # maps not multiples of the window: padding
    with torch.autocast('cpu', dtype=torch.bfloat16):
        outs = model(x)
    sum(o.float().mean() for o in outs).backward()
    with torch.no_grad():
        reference = model(x)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    for o, r in zip(outs, reference):
        assert o.shape == r.shape
        assert (o.float() - r).abs().max() < 0.1 * r.abs().max()  # bf16 rounding, not a different computation
    assert x.grad is not None and torch.isfinite(x.grad).all()

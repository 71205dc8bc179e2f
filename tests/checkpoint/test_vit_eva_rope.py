"""ViTPE loads timm's Eva layout of the RoPE-ViT checkpoints (vit_*_patch16_rope[_mixed][_ape]_224.naver_in1k, format
'timm_eva') and then computes timm's features: at 224², at a larger and at a non-square size (timm dynamic_img_size).
The timm models are built with random weights (pretrained=False, no network), every tensor perturbed."""
import pytest
import torch

from vitpe_mm.checkpoint import CheckpointError, convert_state_dict, detect_format
from vitpe_mm.models.vit import ViTPE

from conftest import perturb

timm = pytest.importorskip('timm')

# timm name -> our pe_type; 4 of the 12 blocks of ViT-S (same widths and heads: head dims 64)
VARIANTS = {
    'vit_small_patch16_rope_224': 'rope_axial',
    'vit_small_patch16_rope_mixed_224': 'rope_mixed',
    'vit_small_patch16_rope_ape_224': ['abs', 'rope_axial'],
    'vit_small_patch16_rope_mixed_ape_224': ['abs', 'rope_mixed'],
}
DEPTH = 4


def _timm_eva(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False, depth=DEPTH, dynamic_img_size=True).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, p in ref.named_parameters():
            if 'gamma' in key:  # layer scale starts at 1e-5: make the blocks matter
                p.uniform_(0.5, 1.5, generator=g)
            else:
                p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return ref


def _features(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    tokens = ref.forward_features(x)[:, ref.num_prefix_tokens:]  # B, 1 + h*w, C -> B, h*w, C
    h, w = x.shape[-2] // 16, x.shape[-1] // 16
    return tokens.reshape(x.shape[0], h, w, -1).permute(0, 3, 1, 2)


@pytest.mark.parametrize('name', list(VARIANTS))
def test_matches_timm_eva_rope_vit(name, tmp_path):
    ref = _timm_eva(name)
    path = tmp_path / 'eva.pth'
    torch.save(ref.state_dict(), path)
    assert detect_format(ref.state_dict(), 'vit') == 'timm_eva'
    ours = ViTPE(arch=dict(embed_dims=384, num_layers=DEPTH, num_heads=6), pe_type=VARIANTS[name],
                 init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    ours.eval()
    for hw in [(224, 224), (320, 320), (160, 288)]:
        x = torch.randn(2, 3, *hw)
        with torch.no_grad():
            expected, (out,) = _features(ref, x), ours(x)
        assert out.shape == expected.shape
        diff = (out - expected).abs().max().item()
        assert diff < 1e-5, f'{name} at {hw}: max abs difference {diff:.2e}'


def test_layer_scale_is_folded_exactly_and_freqs_split_per_block():
    ref = _timm_eva('vit_small_patch16_rope_mixed_224')
    state = ref.state_dict()
    ours = ViTPE(arch=dict(embed_dims=384, num_layers=DEPTH, num_heads=6), pe_type='rope_mixed')
    converted, fmt = convert_state_dict(state, ours, 'vit')
    assert fmt == 'timm_eva'
    gamma = state['blocks.1.gamma_2']
    assert torch.equal(converted['blocks.1.mlp.fc2.weight'], state['blocks.1.mlp.fc2.weight'] * gamma[:, None])
    assert torch.equal(converted['blocks.1.mlp.fc2.bias'], state['blocks.1.mlp.fc2.bias'] * gamma)
    gamma = state['blocks.2.gamma_1']
    assert torch.equal(converted['blocks.2.attn.proj.weight'], state['blocks.2.attn.proj.weight'] * gamma[:, None])
    for j in range(DEPTH):
        assert torch.equal(converted[f'rope.freqs.0.{j}'], state['rope.freqs'][:, j])
    assert not any('gamma' in k or k == 'rope.freqs' for k in converted)


def test_eva_attention_q_v_biases_load_as_qkv_bias():
    """Eva's own attention (attn_type='eva': q_bias and v_bias, no key bias) with RoPE-ViT's axial RoPE."""
    from timm.models.eva import Eva
    torch.manual_seed(0)
    ref = Eva(embed_dim=384, depth=2, num_heads=6, attn_type='eva', init_values=1e-5, global_pool='token',
              use_abs_pos_emb=False, use_rot_pos_emb=True, rope_grid_indexing='xy', rope_temperature=100.0,
              dynamic_img_size=True).eval()
    perturb(ref, std=0.05)
    state = ref.state_dict()
    assert 'blocks.0.attn.q_bias' in state and 'blocks.0.attn.qkv.bias' not in state
    ours = ViTPE(arch=dict(embed_dims=384, num_layers=2, num_heads=6), pe_type='rope_axial')
    converted, _ = convert_state_dict(state, ours, 'vit')
    q, v = state['blocks.1.attn.q_bias'], state['blocks.1.attn.v_bias']
    assert torch.equal(converted['blocks.1.attn.qkv.bias'], torch.cat([q, torch.zeros_like(q), v]))
    ours.load_state_dict(converted, strict=True)
    x = torch.randn(1, 3, 160, 288)
    with torch.no_grad():
        assert (ours.eval()(x)[0] - _features(ref, x)).abs().max() < 1e-5


@pytest.mark.parametrize('name,pe_type,wanted', [
    ('vit_small_patch16_rope_mixed_224', 'rope_axial', "pe_type='rope_mixed'"),
    ('vit_small_patch16_rope_224', 'abs', "pe_type='rope_axial'"),
    ('vit_small_patch16_rope_ape_224', 'rope_axial', "pe_type=['abs', 'rope_axial']"),
])
def test_wrong_pe_type_for_the_checkpoint_is_refused(name, pe_type, wanted):
    state = _timm_eva(name).state_dict()
    ours = ViTPE(arch=dict(embed_dims=384, num_layers=DEPTH, num_heads=6), pe_type=pe_type)
    with pytest.raises(CheckpointError, match=f'build ViTPE with {wanted}'.replace('[', r'\[').replace(']', r'\]')):
        convert_state_dict(state, ours, 'vit')


def test_eva_parts_without_counterpart_are_named():
    state = _timm_eva('vit_small_patch16_rope_224').state_dict()
    state['blocks.0.attn.q_norm.weight'] = torch.ones(64)
    ours = ViTPE(arch=dict(embed_dims=384, num_layers=DEPTH, num_heads=6), pe_type='rope_axial')
    with pytest.raises(CheckpointError, match=r'blocks\.0\.attn\.q_norm\.weight'):
        convert_state_dict(state, ours, 'vit')


def test_plain_timm_vit_is_still_detected_as_timm():
    state = timm.create_model('vit_tiny_patch16_224', pretrained=False, depth=1).state_dict()
    assert detect_format(state, 'vit') == 'timm'


@pytest.mark.parametrize('pair_name', ['vit-rope-timm', 'vit-rope-axial-timm'])
def test_benchmark_rope_pairs_compare_equal_models(pair_name):
    """tools/benchmark.py's RoPE rows time ViTPE against timm's Eva with the same weights (through this format)."""
    import argparse

    from vitpe_mm.bench import PAIR_CLASSES
    from vitpe_mm.bench.measure import run_case
    pair = PAIR_CLASSES[pair_name](tiny=True, device=torch.device('cpu'))
    assert pair.fmt == 'timm_eva'
    options = argparse.Namespace(compile=False, warmup=0, repeats=1, no_memory=True, no_flops=True, peak_tflops=None)
    (row,) = run_case(pair, (64, 100), 1, 'fp32', ['fwd'], options)
    assert row['equal'] is True and row['max_abs_diff'] <= 1e-5

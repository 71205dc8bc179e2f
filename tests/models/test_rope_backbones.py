"""RoPE types on all three backbones: ViTPE (global and ViTDet windowed blocks), CPVTv2 (spatial-reduction
attention), SwinRPB (shifted windows), alone and composed with 'abs', at native, larger, non-square and non-divisible
sizes. The windowed and spatial-reduction attentions are compared with a brute-force reference: full attention over
the padded token map restricted by an explicit mask (the shifted-window partition written without the cyclic roll),
q and k rotated by timm's rotary embeddings at the tokens' global positions."""
import math

import pytest
import torch

from vitpe_mm.layers import BlockSpec, StageSpec, build_pos_encoding
from vitpe_mm.layers._compat import TORCH_VERSION
from vitpe_mm.layers.sr_attention import SpatialReductionAttention
from vitpe_mm.models.cpvt import CPVTv2
from vitpe_mm.models.swin import SwinRPB, WindowAttention
from vitpe_mm.models.vit import ViTBlock, ViTPE

from conftest import perturb

timm_rope = pytest.importorskip('timm.layers.pos_embed_sincos')

ROPE_TYPES = ['rope_axial', 'rope_mixed', 'rope_dinov3', ['abs', 'rope_mixed']]
# head dimensions 16 (32 in Swin's later stages): divisible by 4, as 2-D RoPE needs
TINY_VIT = dict(embed_dims=32, num_layers=4, num_heads=2)
TINY_CPVT = dict(embed_dims=(16, 32, 48, 64), num_heads=(1, 2, 3, 4), mlp_ratios=(2, 2, 2, 2), depths=(1, 2, 1, 1))
TINY_SWIN = dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2))
# native (224: the pre-training size of the 'abs' tables), larger, non-square, not a multiple of any stride
SIZES = [(224, 224), (288, 288), (160, 256), (150, 213)]


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _backbone(name: str, pe_type):
    torch.manual_seed(0)
    if name == 'vit':
        return ViTPE(arch=dict(TINY_VIT), pe_type=pe_type), (16,)
    if name == 'vitdet':  # windowed blocks 0 and 2, global blocks 1 and 3, no cls token
        return ViTPE(arch=dict(TINY_VIT), pe_type=pe_type, window_size=4, global_attn_indexes=(1, 3),
                     with_cls_token=False), (16,)
    if name == 'cpvt':
        return CPVTv2(arch=dict(TINY_CPVT), pe_type=pe_type), (4, 8, 16, 32)
    return SwinRPB(arch=dict(TINY_SWIN), pe_type=pe_type, clamp_window=False, drop_path_rate=0.0), (4, 8, 16, 32)


def _perturb(model: torch.nn.Module) -> torch.nn.Module:
    return perturb(model, std=0.05).eval()


@pytest.mark.parametrize('name', ['vit', 'vitdet', 'cpvt', 'swin'])
@pytest.mark.parametrize('pe_type', ROPE_TYPES, ids=str)
def test_backbones_run_with_rope_at_any_size(name, pe_type):
    """Every size gives the documented ceil(H/s) x ceil(W/s) maps, and the rotation changes them (the same weights
    without it give other features)."""
    model, strides = _backbone(name, pe_type)
    model = _perturb(model)
    without, _ = _backbone(name, 'abs' if isinstance(pe_type, list) else 'none')
    without.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith('rope.')})
    without.eval()
    for hw in SIZES:
        x = torch.randn(1, 3, *hw)
        with torch.no_grad():
            outs, plain = model(x), without(x)
        assert [tuple(o.shape[-2:]) for o in outs] == [(_ceil(hw[0], s), _ceil(hw[1], s)) for s in strides]
        assert all(torch.isfinite(o).all() for o in outs)
        assert (outs[-1] - plain[-1]).abs().max() > 1e-3, f'{name} {pe_type} at {hw}: the rotation had no effect'


@pytest.mark.parametrize('name', ['vit', 'cpvt', 'swin'])
def test_mixed_frequencies_train_and_freeze_per_block(name):
    model, _ = _backbone(name, 'rope_mixed')
    model.train()
    sum(o.square().mean() for o in model(torch.randn(1, 3, 64, 96))).backward()
    freqs = {k: p for k, p in model.named_parameters() if k.startswith('rope.freqs.')}
    assert freqs and all(p.grad is not None and p.grad.abs().sum() > 0 for p in freqs.values())
    # frozen_stages freezes the frequencies of the frozen blocks only (ViT: blocks 0, 1; CPVT / Swin: stage 0)
    torch.manual_seed(0)
    if name == 'vit':
        frozen, expected = ViTPE(arch=dict(TINY_VIT), pe_type='rope_mixed', frozen_stages=2), {'0.0', '0.1'}
    elif name == 'cpvt':
        frozen, expected = CPVTv2(arch=dict(TINY_CPVT), pe_type='rope_mixed', frozen_stages=1), {'0.0'}
    else:
        frozen, expected = SwinRPB(arch=dict(TINY_SWIN), pe_type='rope_mixed', frozen_stages=1), {'0.0', '0.1'}
    frozen.train()
    assert {k[len('rope.freqs.'):] for k, p in frozen.named_parameters()
            if k.startswith('rope.') and not p.requires_grad} == expected


# ------------------------------------------------------------------------------------------ brute-force reference
def _timm_rotate(kind: str, t: torch.Tensor, yx: torch.Tensor, hw, head_dims: int, freqs=None) -> torch.Tensor:
    """q or k (B, nH, M, d) rotated by timm's rotary embedding of each kind at the float positions yx (M, 2)."""
    y, x = yx[:, 0], yx[:, 1]
    if kind == 'rope_axial':  # RotaryEmbeddingCat(in_pixels=False, 'xy'): bands 100^(-i/(d/4)), x half first
        bands = timm_rope.freq_bands(head_dims // 4, temperature=100.0, step=1)
        angles = torch.cat([x[:, None] * bands, y[:, None] * bands], -1)
        sin, cos = angles.sin().repeat_interleave(2, -1), angles.cos().repeat_interleave(2, -1)
        emb = torch.cat([sin, cos], -1)
        return timm_rope.apply_rot_embed_cat(t, emb)
    if kind == 'rope_mixed':  # RotaryEmbeddingMixed's get_mixed_freqs at these positions
        emb = timm_rope.get_mixed_freqs(freqs, x.contiguous(), y.contiguous())  # nH, M, 2d
        return timm_rope.apply_rot_embed_cat(t, emb)
    # RotaryEmbeddingDinoV3 at coordinates normalised by the map (padding continues past +1)
    coords = torch.stack([2 * (y + 0.5) / hw[0] - 1, 2 * (x + 0.5) / hw[1] - 1], -1)
    sin, cos = timm_rope.RotaryEmbeddingDinoV3(head_dims, temperature=100.0)._get_pos_embed_from_coords(coords)
    return timm_rope.apply_rot_embed_cat(t, torch.cat([sin, cos], -1), half=True)


def _padded_grid(hp: int, wp: int) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing='ij')
    return torch.stack([yy.reshape(-1), xx.reshape(-1)], -1).float()


def _window_mask(yx: torch.Tensor, window, shift) -> torch.Tensor:
    """Tokens attend to each other iff they fall in the same window of the partition displaced by (sh, sw): one
    window index per axis floor((y - sh) / Mh), without the cyclic roll (the tokens that the roll wraps around
    form windows of their own: index -1)."""
    iy = torch.div(yx[:, 0] - shift[0], window[0], rounding_mode='floor')
    ix = torch.div(yx[:, 1] - shift[1], window[1], rounding_mode='floor')
    return (iy[:, None] == iy[None]) & (ix[:, None] == ix[None])


def _attend(q, k, v, allowed=None):
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float('-inf'))
    return scores.softmax(-1) @ v


def _pe(kind: str, embed_dims: int, num_heads: int, block: BlockSpec, hw):
    pe = build_pos_encoding(kind, stages=[StageSpec(embed_dims, num_heads, (8, 8), (block,) * 2)])
    with torch.no_grad():
        for p in pe.parts[0].parameters():
            p.normal_()  # learned frequencies: any values
    freqs = pe.parts[0].freqs[0][1] if kind == 'rope_mixed' else None
    return pe.block(pe.prepare(0, hw, torch.zeros(1)), 1), freqs


KINDS = ['rope_axial', 'rope_mixed', 'rope_dinov3']


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('hw,window,shift', [((9, 13), (4, 4), (2, 2)), ((7, 7), (7, 7), (3, 3)),
                                             ((10, 6), (3, 3), (1, 1)), ((9, 13), (4, 4), (0, 0))])
def test_swin_shifted_windows_match_masked_global_attention(kind, hw, window, shift):
    """SwinRPB's window attention (both paths: the cached gathers and the pad / roll / partition code that
    torch.compile runs) equals full attention over the zero-padded map, masked to the displaced windows."""
    torch.manual_seed(0)
    c, nh, b = 32, 2, 2
    attn = _perturb(WindowAttention(c, nh, window))
    bpe, freqs = _pe(kind, c, nh, BlockSpec(window_size=window), hw)
    x = torch.randn(b, hw[0] * hw[1], c)
    hp, wp = _ceil(hw[0], window[0]) * window[0], _ceil(hw[1], window[1]) * window[1]
    with torch.no_grad():
        gathered = attn.forward_map(x, hw, window, shift, bpe)
        mask = None
        if shift != (0, 0):
            from vitpe_mm.layers import shifted_window_attn_mask
            mask = shifted_window_attn_mask((hp, wp), window, shift)
        plain = attn.proj(attn._windows_plain(x, hw, window, shift, mask, bpe))

        padded = torch.zeros(b, hp, wp, c)
        padded[:, :hw[0], :hw[1]] = x.view(b, *hw, c)
        q, k, v = attn.qkv(padded.view(b, hp * wp, c)).view(b, hp * wp, 3, nh, -1).permute(2, 0, 3, 1, 4)
        yx = _padded_grid(hp, wp)
        q, k = (_timm_rotate(kind, t, yx, hw, c // nh, freqs) for t in (q, k))
        out = _attend(q, k, v, _window_mask(yx, window, shift)).transpose(1, 2).reshape(b, hp, wp, c)
        ref = attn.proj(out[:, :hw[0], :hw[1]].reshape(b, -1, c))
    assert (gathered - ref).abs().max() < 1e-5
    assert (plain - ref).abs().max() < 1e-5


@pytest.mark.parametrize('kind', KINDS)
def test_vitdet_windows_match_masked_global_attention(kind):
    """ViTPE's windowed block: windows of the zero-padded map, padding tokens taking part as keys (ViTDet)."""
    torch.manual_seed(0)
    c, nh, b, hw, window = 32, 2, 2, (7, 10), (4, 4)
    block = _perturb(ViTBlock(c, nh, window_size=window))
    bpe, freqs = _pe(kind, c, nh, BlockSpec(window_size=window), hw)
    x = torch.randn(b, hw[0] * hw[1], c)
    hp, wp = 8, 12
    with torch.no_grad():
        out = block(x, hw, bpe)
        padded = torch.zeros(b, hp, wp, c)
        padded[:, :hw[0], :hw[1]] = block.norm1(x).view(b, *hw, c)
        attn = block.attn
        q, k, v = attn.qkv(padded.view(b, -1, c)).view(b, hp * wp, 3, nh, -1).permute(2, 0, 3, 1, 4)
        yx = _padded_grid(hp, wp)
        q, k = (_timm_rotate(kind, t, yx, hw, c // nh, freqs) for t in (q, k))
        a = _attend(q, k, v, _window_mask(yx, window, (0, 0))).transpose(1, 2).reshape(b, hp, wp, c)
        ref = x + attn.proj(a[:, :hw[0], :hw[1]].reshape(b, -1, c))
        ref = ref + block.mlp(block.norm2(ref))
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('hw,sr', [((9, 13), 2), ((11, 16), 4)])
def test_spatial_reduction_attention_keys_at_cell_centres(kind, hw, sr):
    """CPVTv2's spatial-reduction attention: queries at the grid, keys at the centres of their sr x sr cells."""
    torch.manual_seed(0)
    c, nh, b = 32, 2, 2
    attn = _perturb(SpatialReductionAttention(c, nh, sr))
    bpe, freqs = _pe(kind, c, nh, BlockSpec(sr_ratio=sr), hw)
    x = torch.randn(b, hw[0] * hw[1], c)
    kh, kw = hw[0] // sr, hw[1] // sr
    with torch.no_grad():
        out = attn(x, hw, bpe)
        q = attn.q(x).view(b, -1, nh, c // nh).transpose(1, 2)
        feat = attn.sr(x.transpose(1, 2).reshape(b, c, *hw))
        k, v = attn.kv(attn.norm(feat.flatten(2).transpose(1, 2))).view(b, -1, 2, nh, c // nh).permute(2, 0, 3, 1, 4)
        cy, cx = torch.meshgrid(torch.arange(kh) * sr + (sr - 1) / 2, torch.arange(kw) * sr + (sr - 1) / 2,
                                indexing='ij')
        centres = torch.stack([cy.reshape(-1), cx.reshape(-1)], -1).float()
        q = _timm_rotate(kind, q, _padded_grid(*hw), hw, c // nh, freqs)
        k = _timm_rotate(kind, k, centres, hw, c // nh, freqs)
        ref = attn.proj(_attend(q, k, v).transpose(1, 2).reshape(b, -1, c))
    assert (out - ref).abs().max() < 1e-5


def test_global_rope_vit_equals_timm_rotation_of_the_grid():
    """A global ViTPE block rotates the grid tokens by timm's 2-D RoPE and leaves the cls token alone."""
    torch.manual_seed(0)
    c, nh, hw = 32, 2, (5, 7)
    block = _perturb(ViTBlock(c, nh, num_prefix_tokens=1))
    stages = [StageSpec(c, nh, (8, 8), (BlockSpec(),) * 2, num_prefix_tokens=1)]
    pe = build_pos_encoding('rope_axial', stages=stages)
    x = torch.randn(2, 1 + hw[0] * hw[1], c)
    with torch.no_grad():
        out = block(x, hw, pe.block(pe.prepare(0, hw, x), 0))
        q, k, v = block.attn.qkv(block.norm1(x)).view(2, -1, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        emb = timm_rope.RotaryEmbeddingCat(c // nh, temperature=100.0, in_pixels=False,
                                           grid_indexing='xy').get_embed(hw)
        q, k = (torch.cat([t[:, :, :1], timm_rope.apply_rot_embed_cat(t[:, :, 1:], emb)], 2) for t in (q, k))
        ref = x + block.attn.proj(_attend(q, k, v).transpose(1, 2).reshape(2, -1, c))
        ref = ref + block.mlp(block.norm2(ref))
    assert (out - ref).abs().max() < 1e-5
    assert math.isfinite(out.abs().max().item())


@pytest.mark.skipif(TORCH_VERSION < (2, 2), reason='whole-graph capture needs torch >= 2.2: dynamo in torch 2.1 cannot '
                    'trace attribute access on NamedTuple subclasses (the per-block PE view); eager is unaffected')
@pytest.mark.parametrize('name', ['vit', 'vitdet', 'cpvt', 'swin'])
def test_rope_paths_capture_in_one_graph(name, pe_type='rope_mixed'):
    """torch.compile sees the rotations without a graph break (fullgraph; dynamo with the eager backend, so no C++
    compiler is needed): the Swin compile path, ViTDet windows and SR keys included, outputs equal to eager."""
    model, _ = _backbone(name, pe_type)
    model = _perturb(model)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend='eager', fullgraph=True, dynamic=False)
    x = torch.randn(1, 3, 80, 112)
    with torch.no_grad():
        for out, ref in zip(compiled(x), model(x)):
            assert (out - ref).abs().max() < 1e-5

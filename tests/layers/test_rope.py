"""RoPE functions (vitpe_mm.layers.rope): equal to timm 1.0.31's rotary modules on non-square grids, and correct
inside windows and spatial-reduction attention against a brute-force reference: full attention restricted by an
explicit mask, with rotations built from explicit 2x2 matrices at explicitly computed global positions."""
import math

import pytest
import torch

from vitpe_mm.layers import (
    BlockSpec,
    StageSpec,
    attention_with_bias,
    build_pos_encoding,
    grid_token_positions,
    reduced_key_positions,
    shifted_window_attn_mask,
    window_partition,
    window_token_positions,
)
from vitpe_mm.layers.rope import (
    apply_rope,
    axial_rope_angles,
    axial_rope_bands,
    dinov3_rope_angles,
    dinov3_rope_periods,
    grid_positions,
    mixed_rope_angles,
    mixed_rope_init,
    reduced_positions,
    rope_sin_cos,
    window_positions,
)

timm_rope = pytest.importorskip('timm.layers.pos_embed_sincos')

GRIDS = [(5, 7), (7, 4), (3, 11)]


# ------------------------------------------------------------------------------------------ equality with timm
@pytest.mark.parametrize('hw', GRIDS)
@pytest.mark.parametrize('head_dims,temperature', [(32, 100.0), (64, 100.0), (16, 10000.0)])
def test_axial_equals_timm_rotary_embedding_cat(hw, head_dims, temperature):
    # RoPE-ViT axial as timm's Eva builds it: in_pixels=False ('index' grid), grid_indexing='xy' (x half first)
    ref = timm_rope.RotaryEmbeddingCat(head_dims, temperature=temperature, in_pixels=False, grid_indexing='xy')
    emb = ref.get_embed(hw)  # N, 2d: sin | cos, interleaved pairs
    sin, cos = rope_sin_cos(axial_rope_angles(grid_positions(hw), axial_rope_bands(head_dims, temperature)))
    assert sin.shape == (hw[0] * hw[1], head_dims // 2)
    assert torch.equal(sin.repeat_interleave(2, -1), emb[:, :head_dims])
    assert torch.equal(cos.repeat_interleave(2, -1), emb[:, head_dims:])
    x = torch.randn(2, 3, hw[0] * hw[1], head_dims)
    diff = (apply_rope(x, sin, cos) - timm_rope.apply_rot_embed_cat(x, emb)).abs().max()
    assert diff <= 1e-6


@pytest.mark.parametrize('hw', GRIDS)
def test_mixed_equals_timm_rotary_embedding_mixed(hw):
    depth, num_heads, head_dims = 3, 2, 16
    torch.manual_seed(0)
    ref = timm_rope.RotaryEmbeddingMixed(num_heads * head_dims, depth, num_heads, temperature=10.0,
                                         grid_indexing='xy')
    torch.manual_seed(0)
    freqs = mixed_rope_init(head_dims, num_heads, depth, temperature=10.0)
    assert torch.equal(freqs, ref.freqs.data)  # same initialisation, same random draws
    with torch.no_grad():
        ref.freqs.normal_()  # learned frequencies: any values
    emb = ref.get_embed(hw)  # depth, nH, N, 2d
    x = torch.randn(2, num_heads, hw[0] * hw[1], head_dims)
    for block in range(depth):
        sin, cos = rope_sin_cos(mixed_rope_angles(grid_positions(hw), ref.freqs[:, block]))
        assert sin.shape == (num_heads, hw[0] * hw[1], head_dims // 2)
        assert torch.equal(sin.repeat_interleave(2, -1), emb[block, :, :, :head_dims])
        diff = (apply_rope(x, sin, cos) - timm_rope.apply_rot_embed_cat(x, emb[block])).abs().max()
        assert diff <= 1e-6


def test_mixed_angles_carry_gradient_to_freqs():
    freqs = mixed_rope_init(8, 2, 1)[:, 0].requires_grad_()
    sin, cos = rope_sin_cos(mixed_rope_angles(grid_positions((3, 4)), freqs))
    x = torch.randn(1, 2, 12, 8)
    apply_rope(x, sin, cos).square().sum().backward()
    assert freqs.grad is not None and freqs.grad.abs().sum() > 0


@pytest.mark.parametrize('hw', GRIDS)
@pytest.mark.parametrize('normalize', ['separate', 'min', 'max'])
def test_dinov3_equals_timm_rotary_embedding_dinov3(hw, normalize):
    head_dims = 32
    ref = timm_rope.RotaryEmbeddingDinoV3(head_dims, temperature=100.0, normalize_coords=normalize)
    emb = ref.get_embed(hw)  # N, 2d: sin | cos, half layout
    positions = grid_positions(hw, normalize=normalize)
    sin, cos = rope_sin_cos(dinov3_rope_angles(positions, dinov3_rope_periods(head_dims, 100.0)))
    assert torch.equal(torch.cat([sin, sin], -1), emb[:, :head_dims])
    assert torch.equal(torch.cat([cos, cos], -1), emb[:, head_dims:])
    x = torch.randn(2, 3, hw[0] * hw[1], head_dims)
    diff = (apply_rope(x, sin, cos, half=True) - timm_rope.apply_rot_embed_cat(x, emb, half=True)).abs().max()
    assert diff <= 1e-6


def test_dinov3_min_max_periods_equal_timm():
    ref = timm_rope.RotaryEmbeddingDinoV3(32, temperature=None, min_period=0.5, max_period=50.0)
    sin, _ = rope_sin_cos(dinov3_rope_angles(grid_positions((4, 6), normalize='separate'),
                                             dinov3_rope_periods(32, None, min_period=0.5, max_period=50.0)))
    assert torch.allclose(torch.cat([sin, sin], -1), ref.get_embed((4, 6))[:, :32], atol=1e-6)


def test_bf16_rotation_matches_timm_and_keeps_dtype():
    emb = timm_rope.RotaryEmbeddingCat(32, temperature=100.0, in_pixels=False, grid_indexing='xy').get_embed((4, 6))
    sin, cos = rope_sin_cos(axial_rope_angles(grid_positions((4, 6)), axial_rope_bands(32)))
    x = torch.randn(2, 2, 24, 32).bfloat16()
    out = apply_rope(x, sin, cos)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, timm_rope.apply_rot_embed_cat(x, emb))


def test_prefix_tokens_are_not_rotated_as_timm_eva():
    emb = timm_rope.RotaryEmbeddingCat(16, temperature=100.0, in_pixels=False, grid_indexing='xy').get_embed((3, 5))
    sin, cos = rope_sin_cos(axial_rope_angles(grid_positions((3, 5)), axial_rope_bands(16)))
    x = torch.randn(2, 2, 1 + 15, 16)
    out = apply_rope(x, sin, cos, num_prefix_tokens=1)
    expected = torch.cat([x[:, :, :1], timm_rope.apply_rot_embed_cat(x[:, :, 1:], emb)], dim=2)
    assert torch.equal(out, expected)


def test_scores_depend_on_relative_positions_only():
    # the defining property of RoPE: <R(p) q, R(p') k> is a function of p - p' (axial and mixed alike)
    q, k = torch.randn(16), torch.randn(16)
    freqs = mixed_rope_init(16, 1, 1)[:, 0]
    for angles_of in (lambda p: axial_rope_angles(p, axial_rope_bands(16)), lambda p: mixed_rope_angles(p, freqs)[0]):
        def score(p, p2, angles_of=angles_of):
            sin, cos = rope_sin_cos(angles_of(torch.tensor([p, p2], dtype=torch.float32)))
            rq = apply_rope(q.view(1, 1, 1, 16).expand(1, 1, 2, 16), sin, cos)[0, 0, 0]
            rk = apply_rope(k.view(1, 1, 1, 16).expand(1, 1, 2, 16), sin, cos)[0, 0, 1]
            return (rq * rk).sum()
        base = score((1.0, 2.0), (4.0, 7.0))
        assert torch.allclose(base, score((6.0, 3.0), (9.0, 8.0)), atol=1e-4)
        assert not torch.allclose(base, score((1.0, 2.0), (7.0, 4.0)), atol=1e-3)


# ------------------------------------------------------------------------------------------ explicit reference
def explicit_angles(kind: str, yx: torch.Tensor, head_dims: int, hw, freqs=None) -> torch.Tensor:
    """Angle of every rotated pair at float64 positions yx (M, 2), written out from the papers' formulas."""
    y, x = yx[:, 0:1].double(), yx[:, 1:2].double()
    quarter = torch.arange(head_dims // 4, dtype=torch.float64)
    if kind == 'axial':  # RoPE-ViT: theta_i = 100^(-i / (d/4)), pairs 0..d/4-1 rotate by x, the rest by y
        theta = 100.0 ** (-quarter / (head_dims // 4))
        return torch.cat([x * theta, y * theta], dim=-1)
    if kind == 'mixed':  # RoPE-Mixed: x f_x + y f_y per head
        f = freqs.double()
        return x.unsqueeze(0) * f[0].unsqueeze(1) + y.unsqueeze(0) * f[1].unsqueeze(1)  # nH, M, d/2
    # DINOv3: 0.5-centred coordinates normalised by H and W to [-1, 1], periods 100^(2i / (d/2))
    cy, cx = 2 * (y + 0.5) / hw[0] - 1, 2 * (x + 0.5) / hw[1] - 1
    period = 100.0 ** (2 * quarter / (head_dims // 2))
    return torch.cat([2 * math.pi * cy / period, 2 * math.pi * cx / period], dim=-1)


def explicit_rotate(t: torch.Tensor, angles: torch.Tensor, half: bool) -> torch.Tensor:
    """Rotates the pairs of t (..., M, d) by 2x2 matrices [[cos, -sin], [sin, cos]] of angles (..., M, d/2)."""
    d = t.shape[-1]
    first = torch.arange(d // 2) if half else torch.arange(0, d, 2)
    second = first + d // 2 if half else first + 1
    rot = torch.stack([torch.stack([angles.cos(), -angles.sin()], -1),
                       torch.stack([angles.sin(), angles.cos()], -1)], -2)  # ..., M, d/2, 2, 2
    pairs = torch.stack([t[..., first], t[..., second]], -1).double()  # ..., M, d/2, 2
    turned = (rot @ pairs.unsqueeze(-1)).squeeze(-1)
    out = torch.empty_like(t, dtype=torch.float64)
    out[..., first], out[..., second] = turned[..., 0], turned[..., 1]
    return out


def masked_attention(q, k, v, allowed):
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return scores.masked_fill(~allowed, float('-inf')).softmax(-1) @ v


def our_angles(kind: str, positions: torch.Tensor, head_dims: int, freqs=None) -> torch.Tensor:
    if kind == 'axial':
        return axial_rope_angles(positions, axial_rope_bands(head_dims))
    if kind == 'mixed':
        return mixed_rope_angles(positions, freqs)
    return dinov3_rope_angles(positions, dinov3_rope_periods(head_dims))


KINDS = ['axial', 'mixed', 'dinov3']


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('hw,window,shift', [((9, 13), (4, 4), (2, 2)), ((9, 13), (5, 5), (0, 0)),
                                             ((6, 10), (3, 4), (1, 2)), ((4, 7), (4, 4), (0, 2))])
def test_windows_rotate_by_global_positions(kind, hw, window, shift):
    """Shifted and padded windows (Swin, ViTDet) against full attention over the padded map, masked to the
    windows (and, for a shift, to Swin's regions), rotated at the global positions of the padded grid."""
    torch.manual_seed(0)
    b, nh, d = 2, 2, 16
    half = kind == 'dinov3'
    hp, wp = -(-hw[0] // window[0]) * window[0], -(-hw[1] // window[1]) * window[1]
    (mh, mw), (sh, sw) = window, shift
    freqs = torch.randn(2, nh, d // 2) if kind == 'mixed' else None
    q, k, v = (torch.randn(b, nh, hp * wp, d) for _ in range(3))  # the padded map, row-major

    # brute force: token (y, x) of the padded map sits at (i, j) = ((y - sh) % Hp, (x - sw) % Wp) after the roll
    yy, xx = torch.meshgrid(torch.arange(hp), torch.arange(wp), indexing='ij')
    yy, xx = yy.reshape(-1), xx.reshape(-1)
    i, j = (yy - sh) % hp, (xx - sw) % wp
    win = (i // mh) * (wp // mw) + j // mw
    band = lambda t, n, m, s: (t >= n - m).long() + (t >= n - s).long() if s else torch.zeros_like(t)  # noqa: E731
    region = band(i, hp, mh, sh) * 3 + band(j, wp, mw, sw)
    allowed = (win[:, None] == win[None]) & (region[:, None] == region[None])
    angles = explicit_angles(kind, torch.stack([yy, xx], -1), d, hw, freqs)
    ref = masked_attention(explicit_rotate(q, angles, half), explicit_rotate(k, angles, half), v.double(), allowed)

    # windowed: roll + partition the maps, rotate each window by its gathered global positions, Swin's mask
    def to_windows(t):  # B, nH, Hp*Wp, d -> B*nW, nH, N, d
        t = t.permute(0, 2, 1, 3).reshape(b, hp, wp, nh * d)
        t = torch.roll(t, (-sh, -sw), (1, 2)) if sh or sw else t
        return window_partition(t, window)[0].view(-1, mh * mw, nh, d).transpose(1, 2)

    # slot s of window w holds the padded-map token at its rolled place (i, j): global (y, x) = ((i + sh) % Hp, ...)
    # (RoPE scores are relative, so within a window's region an offset would not show in the attention: check the
    # positions themselves; a per-window normalisation would show, see the DINOv3 case)
    w_row, w_col = torch.arange(hp // mh).repeat_interleave(wp // mw), torch.arange(wp // mw).repeat(hp // mh)
    s_row, s_col = torch.arange(mh).repeat_interleave(mw), torch.arange(mw).repeat(mh)
    slot_y = (w_row[:, None] * mh + s_row[None] + sh) % hp
    slot_x = (w_col[:, None] * mw + s_col[None] + sw) % wp
    index_positions = window_positions(grid_positions(hw, extent=(hp, wp)), (hp, wp), window, shift)  # nW, N, 2
    assert torch.equal(index_positions, torch.stack([slot_y, slot_x], -1).float())
    positions = window_positions(grid_positions(hw, extent=(hp, wp), normalize='separate' if half else None),
                                 (hp, wp), window, shift)
    sin, cos = rope_sin_cos(our_angles(kind, positions, d, freqs))
    if sin.dim() == 3:
        sin, cos = sin.unsqueeze(1), cos.unsqueeze(1)  # nW, 1, N, d/2
    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    mask = shifted_window_attn_mask((hp, wp), window, shift)[:, None] if sh or sw else None
    out = attention_with_bias(apply_rope(qw, sin, cos, half), apply_rope(kw, sin, cos, half), vw, mask)
    # back: B*nW, nH, N, d -> B, Hp, Wp, nH*d, roll back -> B, nH, Hp*Wp, d
    out = out.transpose(1, 2).reshape(b, hp // mh, wp // mw, mh, mw, nh * d).transpose(2, 3).reshape(b, hp, wp, -1)
    out = torch.roll(out, (sh, sw), (1, 2)) if sh or sw else out
    out = out.view(b, hp * wp, nh, d).transpose(1, 2)
    assert (out.double() - ref).abs().max() < 1e-5


@pytest.mark.parametrize('kind', KINDS)
@pytest.mark.parametrize('hw,sr', [((9, 13), 2), ((9, 13), 4), ((8, 8), 8), ((7, 12), 3)])
def test_spatial_reduction_keys_at_cell_centres(kind, hw, sr):
    """Keys of spatial-reduction attention sit at the centres of their sr x sr cells (trailing rows/columns that
    fill no cell dropped): (i sr + (sr - 1) / 2, j sr + (sr - 1) / 2) in patch units."""
    torch.manual_seed(0)
    b, nh, d = 2, 2, 16
    half = kind == 'dinov3'
    freqs = torch.randn(2, nh, d // 2) if kind == 'mixed' else None
    kh, kw = hw[0] // sr, hw[1] // sr
    q = torch.randn(b, nh, hw[0] * hw[1], d)
    k, v = torch.randn(b, nh, kh * kw, d), torch.randn(b, nh, kh * kw, d)

    yy, xx = torch.meshgrid(torch.arange(hw[0]), torch.arange(hw[1]), indexing='ij')
    q_yx = torch.stack([yy.reshape(-1), xx.reshape(-1)], -1).double()
    cy, cx = torch.meshgrid(torch.arange(kh) * sr + (sr - 1) / 2, torch.arange(kw) * sr + (sr - 1) / 2,
                            indexing='ij')
    k_yx = torch.stack([cy.reshape(-1), cx.reshape(-1)], -1).double()
    everything = torch.ones(hw[0] * hw[1], kh * kw, dtype=torch.bool)
    ref = masked_attention(explicit_rotate(q, explicit_angles(kind, q_yx, d, hw, freqs), half),
                           explicit_rotate(k, explicit_angles(kind, k_yx, d, hw, freqs), half), v.double(), everything)

    positions = grid_positions(hw, normalize='separate' if half else None)
    key_positions = reduced_positions(positions, hw, sr)
    assert key_positions.shape == (kh * kw, 2)
    sin_q, cos_q = rope_sin_cos(our_angles(kind, positions, d, freqs))
    sin_k, cos_k = rope_sin_cos(our_angles(kind, key_positions, d, freqs))
    out = attention_with_bias(apply_rope(q, sin_q, cos_q, half), apply_rope(k, sin_k, cos_k, half), v)
    assert (out.double() - ref).abs().max() < 1e-5


def test_reduced_positions_identity_and_index_values():
    pos = grid_positions((5, 6))
    assert reduced_positions(pos, (5, 6), 1) is pos
    centres = reduced_positions(pos, (5, 6), 2)  # 2 x 3 cells, row 4 dropped
    assert centres.tolist() == [[0.5, 0.5], [0.5, 2.5], [0.5, 4.5], [2.5, 0.5], [2.5, 2.5], [2.5, 4.5]]


def test_grid_positions_padded_extent_continues_coordinates():
    pos = grid_positions((3, 4), extent=(4, 6)).view(4, 6, 2)
    assert torch.equal(pos[..., 0], torch.arange(4.0).view(4, 1).expand(4, 6))
    assert torch.equal(pos[..., 1], torch.arange(6.0).view(1, 6).expand(4, 6))
    norm = grid_positions((3, 4), extent=(4, 6), normalize='separate').view(4, 6, 2)
    assert torch.allclose(norm[:3, :4].reshape(-1, 2), grid_positions((3, 4), normalize='separate'))
    assert torch.allclose(norm[3, 0, 0], torch.tensor(2 * 3.5 / 3 - 1))  # a padding row: past +1


# ------------------------------------------------------------------------------------------ bad input
def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match='divisible by 4'):
        axial_rope_bands(18)
    with pytest.raises(ValueError, match='divisible by 4'):
        mixed_rope_init(6, 2)
    with pytest.raises(ValueError, match="normalize='mean' is not supported; accepted: 'separate', 'min', 'max'"):
        grid_positions((3, 3), normalize='mean')
    with pytest.raises(ValueError, match='must cover'):
        grid_positions((3, 3), extent=(2, 3))
    with pytest.raises(ValueError, match='multiples of window_size'):
        window_positions(grid_positions((5, 5)), (5, 5), 4)
    with pytest.raises(ValueError, match=r'shape \(16, 2\)'):
        window_positions(grid_positions((3, 3)), (4, 4), 4)
    with pytest.raises(ValueError, match=r'sin/cos must have shape \(\.\.\., N, 8\)'):
        apply_rope(torch.randn(1, 1, 4, 16), torch.randn(4, 16), torch.randn(4, 16))
    with pytest.raises(ValueError, match='does not divide the batch'):
        apply_rope(torch.randn(5, 1, 4, 16), torch.randn(2, 1, 4, 8), torch.randn(2, 1, 4, 8))


# ------------------------------------------------------------------------------------------ the encodings
def _stages(head_dims=16, num_heads=2, depth=3, blocks=None):
    return [StageSpec(head_dims * num_heads, num_heads, (4, 4), tuple(blocks or (BlockSpec(),) * depth), 1)]


def _rotation(pe, hw, block=0, q_pos=None, k_pos=None):
    ctx = pe.prepare(0, hw, torch.zeros(1))
    q_pos = grid_token_positions(hw) if q_pos is None else q_pos
    return pe.block(ctx, block).rotation(q_pos, q_pos if k_pos is None else k_pos)


@pytest.mark.parametrize('hw', GRIDS)
def test_encodings_equal_timm_modules(hw):
    x = torch.randn(2, 2, hw[0] * hw[1], 16)
    # rope_axial = Eva's RotaryEmbeddingCat of the RoPE-ViT models (temperature 100, 'xy')
    rot = _rotation(build_pos_encoding('rope_axial', stages=_stages()), hw)
    ref = timm_rope.RotaryEmbeddingCat(16, temperature=100.0, in_pixels=False, grid_indexing='xy').get_embed(hw)
    assert (apply_rope(x, rot.q_sin, rot.q_cos) - timm_rope.apply_rot_embed_cat(x, ref)).abs().max() <= 1e-6
    # rope_mixed = RotaryEmbeddingMixed (temperature 10, 'xy') with the same frequencies, block by block
    pe = build_pos_encoding('rope_mixed', stages=_stages())
    mixed = timm_rope.RotaryEmbeddingMixed(32, 3, 2, temperature=10.0, grid_indexing='xy')
    with torch.no_grad():
        for j, f in enumerate(pe.parts[0].freqs[0]):
            f.copy_(mixed.freqs[:, j] + 0.1 * torch.randn_like(f))
            mixed.freqs[:, j] = f
    emb = mixed.get_embed(hw)
    for j in range(3):
        rot = _rotation(pe, hw, block=j)
        assert (apply_rope(x, rot.q_sin, rot.q_cos) - timm_rope.apply_rot_embed_cat(x, emb[j])).abs().max() <= 1e-6
    # rope_dinov3 = RotaryEmbeddingDinoV3 (temperature 100, rotate_half), each normalisation
    for normalize in ('separate', 'min', 'max'):
        pe = build_pos_encoding('rope_dinov3', stages=_stages(), rope_normalize_coords=normalize)
        rot = _rotation(pe, hw)
        assert rot.half
        ref = timm_rope.RotaryEmbeddingDinoV3(16, temperature=100.0, normalize_coords=normalize).get_embed(hw)
        diff = (apply_rope(x, rot.q_sin, rot.q_cos, half=True) - timm_rope.apply_rot_embed_cat(x, ref, half=True))
        assert diff.abs().max() <= 1e-6


def test_mixed_frequencies_are_never_cached_across_calls():
    """EMA / MeanTeacher write through p.data (no version bump): the next forward must see the new values."""
    pe = build_pos_encoding('rope_mixed', stages=_stages())
    before = _rotation(pe, (3, 5), block=1).q_sin.clone()
    pe.parts[0].freqs[0][1].data.mul_(2.0)
    after = _rotation(pe, (3, 5), block=1).q_sin
    expected, _ = rope_sin_cos(mixed_rope_angles(grid_token_positions((3, 5)), pe.parts[0].freqs[0][1]))
    assert not torch.allclose(before, after)
    assert torch.equal(after, expected)


def test_fixed_rotations_are_shared_by_the_blocks_of_one_forward_only():
    pe = build_pos_encoding('rope_axial', stages=_stages())
    ctx = pe.prepare(0, (3, 5), torch.zeros(1))
    pos, win = grid_token_positions((3, 5)), window_token_positions((3, 5), (2, 2), (1, 1))
    first = pe.block(ctx, 0).rotation(pos, pos)
    assert pe.block(ctx, 2).rotation(pos, pos) is first
    windowed = pe.block(ctx, 1).rotation(win, win)
    assert windowed.q_sin.shape == (win.shape[0], 1, 4, 8)
    assert pe.block(pe.prepare(0, (3, 5), torch.zeros(1)), 0).rotation(pos, pos) is not first


def test_encoding_windows_and_reduced_keys_use_global_positions():
    hw = (5, 7)
    pe = build_pos_encoding('rope_dinov3', stages=_stages())
    win = window_token_positions(hw, (3, 3), (1, 1))
    rot = _rotation(pe, hw, q_pos=win)
    positions = window_positions(grid_positions(hw, extent=(6, 9), normalize='separate'), (6, 9), 3, 1)
    expected, _ = rope_sin_cos(dinov3_rope_angles(positions, dinov3_rope_periods(16)))
    assert torch.equal(rot.q_sin, expected.unsqueeze(1))
    keys = reduced_key_positions(hw, 2)
    rot = _rotation(build_pos_encoding('rope_mixed', stages=_stages()), hw, k_pos=keys)
    assert rot.q_sin.shape == (2, 35, 8) and rot.k_sin.shape == (2, 6, 8)
    assert keys[0].tolist() == [0.5, 0.5] and keys[-1].tolist() == [2.5, 4.5]


def test_mixed_parameters_per_stage_and_block():
    stages = [StageSpec(32, 2, (8, 8), (BlockSpec((4, 4)),) * 2), StageSpec(64, 4, (4, 4), (BlockSpec(sr_ratio=2),))]
    pe = build_pos_encoding(['abs', 'rope_mixed'], stages=stages)
    module = torch.nn.Module()
    pe.attach(module)
    shapes = {k: tuple(v.shape) for k, v in module.named_parameters() if k.startswith('rope.')}
    assert shapes == {'rope.freqs.0.0': (2, 2, 8), 'rope.freqs.0.1': (2, 2, 8), 'rope.freqs.1.0': (2, 4, 8)}
    at = pe.parameters_at(0, 1)
    assert len(at) == 1 and at[0] is module.rope.freqs[0][1]
    assert all(p is not module.rope.freqs[1][0] for p in pe.parameters_at(1))  # a stage's input: tables only


def test_encoding_arguments_are_checked():
    with pytest.raises(ValueError, match='head dimension must be divisible by 4, stage 0 has embed_dims=36'):
        build_pos_encoding('rope_axial', stages=[StageSpec(36, 2, (4, 4), (BlockSpec(),))])
    with pytest.raises(ValueError, match='rope_temperature must be a positive number'):
        build_pos_encoding('rope_mixed', stages=_stages(), rope_temperature=-1.0)
    with pytest.raises(ValueError, match="rope_normalize_coords='mean' is not supported"):
        build_pos_encoding('rope_dinov3', stages=_stages(), rope_normalize_coords='mean')
    with pytest.raises(ValueError, match='at most one rotary encoding composes|both .rope. encodings'):
        build_pos_encoding(['rope_axial', 'rope_mixed'], stages=_stages())

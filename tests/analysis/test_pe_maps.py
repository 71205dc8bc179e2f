"""PE maps on encodings whose answer is known: 2-D sin-cos similarity, relative-bias tables, the PEG border signal."""
import pytest
import torch

from vitpe_mm.analysis import (
    centre_query_bias,
    find_pe_modules,
    peg_constant_response,
    pos_embed_grid,
    pos_embed_similarity,
    query_positions,
    rel_bias_table_maps,
    resampled_similarity,
)
from vitpe_mm.layers import PosConvEncoding, RelativePositionBias, build_sincos_2d_pos_embed
from vitpe_mm.models import CPVTv2

H, W = 6, 9


@pytest.fixture(scope='module')
def sincos_sim():
    return pos_embed_similarity(pos_embed_grid(build_sincos_2d_pos_embed((H, W), 64), (H, W)))


def test_sincos_similarity_peaks_at_the_query(sincos_sim):
    assert sincos_sim.shape == (H, W, H, W)
    for i in range(H):
        for j in range(W):
            flat = sincos_sim[i, j].flatten()
            assert flat.argmax().item() == i * W + j
            assert flat[i * W + j].item() == pytest.approx(1.0, abs=1e-6)
            assert (flat.sort(descending=True).values[1] < 1 - 1e-4).item()  # the peak is strict


def test_sincos_similarity_symmetries(sincos_sim):
    # symmetric in (query, key)
    torch.testing.assert_close(sincos_sim, sincos_sim.permute(2, 3, 0, 1))
    # it depends on the offset only, and on its size, not its sign: sum_k cos(w_k dx) + sum_k cos(w_k dy)
    for (i, j), (di, dj) in [((2, 4), (1, 2)), ((3, 3), (2, -3)), ((1, 6), (0, 1))]:
        forward = sincos_sim[i, j, i + di, j + dj]
        backward = sincos_sim[i, j, i - di, j - dj]
        elsewhere = sincos_sim[i - 1, j + 1, i - 1 + di, j + 1 + dj]
        torch.testing.assert_close(forward, backward)
        torch.testing.assert_close(forward, elsewhere)
    # and the map of a query mirrored left-right is the mirrored map
    torch.testing.assert_close(sincos_sim[2, 1].flip(-1), sincos_sim[2, W - 2])


def test_pos_embed_grid_drops_prefix_tokens_and_checks_shapes():
    table = torch.randn(1, 1 + H * W, 8)
    grid = pos_embed_grid(table, (H, W), num_prefix_tokens=1)
    torch.testing.assert_close(grid[0, 1], table[0, 2])
    torch.testing.assert_close(pos_embed_grid(table[0, 1:], (H, W)), grid)
    with pytest.raises(ValueError, match='prefix'):
        pos_embed_grid(table, (H, W))
    with pytest.raises(ValueError, match='H, W, C'):
        pos_embed_similarity(table[0])


def test_resampled_similarity_is_the_identity_on_the_same_grid():
    table = build_sincos_2d_pos_embed((H, W), 32)
    torch.testing.assert_close(resampled_similarity(table, (H, W), (H, W)),
                               pos_embed_similarity(pos_embed_grid(table, (H, W))))
    bigger = resampled_similarity(table, (H, W), (2 * H, 2 * W))
    assert bigger.shape == (2 * H, 2 * W, 2 * H, 2 * W)
    assert bigger[3, 5].flatten().argmax().item() == 3 * 2 * W + 5  # the peak stays at the query


def test_query_positions():
    assert query_positions(5, 8) == [0, 1, 2, 3, 4]
    assert query_positions(32, 8) == [0, 4, 9, 13, 18, 22, 27, 31]


def test_rel_bias_maps_and_centre_query_match_the_attention_bias():
    torch.manual_seed(0)
    window = (3, 5)
    rpb = RelativePositionBias(window, num_heads=2)
    table = rpb.relative_position_bias_table
    maps = rel_bias_table_maps(table, window)
    assert maps.shape == (2, 5, 9)
    bias = rpb().detach()  # nH, N, N
    # query (2, 4), key (0, 1): dy = 2, dx = 3 -> map cell (2 + 2, 3 + 4)
    torch.testing.assert_close(bias[:, 2 * 5 + 4, 0 * 5 + 1], maps[:, 4, 7])
    centre = centre_query_bias(table, window)
    torch.testing.assert_close(centre, bias[:, 1 * 5 + 2].reshape(2, 3, 5))
    with pytest.raises(ValueError, match='num_heads'):
        rel_bias_table_maps(table, (4, 4))


def test_centre_query_bias_with_reduced_keys():
    torch.manual_seed(0)
    query, keys = (8, 8), (2, 2)  # spatial-reduction attention: keys on a 4x coarser grid
    rpb = RelativePositionBias(keys, num_heads=3)
    bias = rpb(query, keys).detach()  # nH, 64, 4
    centre = centre_query_bias(rpb.relative_position_bias_table, query, keys)
    torch.testing.assert_close(centre, bias[:, 4 * 8 + 4].reshape(3, 2, 2))


def test_peg_constant_response_shows_the_zero_padding():
    peg = PosConvEncoding(4, 3)
    with torch.no_grad():
        peg.proj[0].weight.fill_(1.0)
        peg.proj[0].bias.zero_()
    delta = peg_constant_response(peg, (5, 7), value=2.0)
    assert delta.shape == (4, 5, 7)
    # 3x3 ones kernel on a constant 2 with zero padding: 9 inside, 6 on edges, 4 in corners (times 2)
    assert delta[0, 2, 3].item() == 18.0 and delta[0, 0, 3].item() == 12.0 and delta[0, 0, 0].item() == 8.0
    torch.manual_seed(0)
    random_peg = PosConvEncoding(6, 3, num_prefix_tokens=1)
    delta = peg_constant_response(random_peg, (6, 6))
    interior = delta[:, 1:-1, 1:-1]
    torch.testing.assert_close(interior, interior[:, :1, :1].expand_as(interior))  # constant away from borders
    assert (delta[:, 0, :] - delta[:, 2:3, 2]).abs().max() > 1e-4  # the border differs


@pytest.mark.parametrize('pe_type,kind,count', [('abs', 'abs', 4), ('peg', 'peg', 4), ('rel_bias', 'rel_bias', 5),
                                                ('sincos', 'sincos', 4), ('none', None, 0)])
def test_find_pe_modules(pe_type, kind, count):
    arch = dict(embed_dims=(8, 16, 16, 16), num_heads=(1, 1, 1, 1), mlp_ratios=(1, 1, 1, 1), depths=(1, 1, 2, 1))
    found = find_pe_modules(CPVTv2(arch=arch, pe_type=pe_type, img_size=64))
    assert sum(len(v) for v in found.values()) == count
    if kind is not None:
        assert len(found[kind]) == count
        assert all(name for name, _ in found[kind])

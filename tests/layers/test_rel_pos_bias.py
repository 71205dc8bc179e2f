import itertools

import pytest
import torch

from vitpe_mm.layers import RelativePositionBias, relative_position_index, resize_rel_pos_bias_table


def _brute_force_index(mh, mw):
    pos = list(itertools.product(range(mh), range(mw)))
    idx = torch.empty(len(pos), len(pos), dtype=torch.long)
    for a, (ya, xa) in enumerate(pos):
        for b, (yb, xb) in enumerate(pos):
            idx[a, b] = (ya - yb + mh - 1) * (2 * mw - 1) + (xa - xb + mw - 1)
    return idx


def test_seed_worked_2x2_example():
    # 002 seed: the 2x2 window gives these indices into a table of (2*2-1)^2 = 9 entries
    expected = torch.tensor([[4, 3, 1, 0],
                             [5, 4, 2, 1],
                             [7, 6, 4, 3],
                             [8, 7, 5, 4]])
    idx = relative_position_index(2)
    assert torch.equal(idx, expected)
    assert set(idx.unique().tolist()) == set(range(9))


@pytest.mark.parametrize('window', [(7, 7), (3, 5), (4, 2)])
def test_equals_brute_force(window):
    idx = relative_position_index(window)
    assert torch.equal(idx, _brute_force_index(*window))
    assert idx.max() == (2 * window[0] - 1) * (2 * window[1] - 1) - 1


def test_same_offset_same_index():
    idx = relative_position_index((5, 6)).reshape(5, 6, 5, 6)
    # (1,1)->(0,0) and (3,4)->(2,3) have the same offset (+1, +1)
    assert idx[1, 1, 0, 0] == idx[3, 4, 2, 3]
    assert idx[1, 1, 0, 0] != idx[0, 0, 1, 1]


def test_key_grid_index_in_range():
    idx = relative_position_index((8, 8), key_size=(2, 2))
    assert idx.shape == (64, 4)
    assert idx.min() >= 0 and idx.max() < 9
    # query (0,0) maps onto key cell (0,0): zero offset is the table's centre (index 4)
    assert idx[0, 0] == 4


class TestResize:
    def test_identity_at_same_size(self):
        t = torch.randn(13 * 13, 3)
        assert resize_rel_pos_bias_table(t, 7) is t

    @pytest.mark.parametrize('old,new', [((7, 7), (12, 12)), ((7, 7), (5, 9)), ((3, 5), (6, 4))])
    def test_shapes_and_head_count(self, old, new):
        heads = 4
        t = torch.randn((2 * old[0] - 1) * (2 * old[1] - 1), heads)
        out = resize_rel_pos_bias_table(t, new, old)
        assert out.shape == ((2 * new[0] - 1) * (2 * new[1] - 1), heads)

    def test_constant_per_head_is_preserved(self):
        t = torch.tensor([1.0, -2.0, 3.0]).expand(13 * 13, 3).contiguous()
        out = resize_rel_pos_bias_table(t, (10, 6))
        torch.testing.assert_close(out, torch.tensor([1.0, -2.0, 3.0]).expand_as(out))

    def test_matches_timm_simple_resize(self):
        from timm.layers.pos_embed_rel import resize_rel_pos_bias_table_simple
        t = torch.randn(13 * 13, 3)
        ref = resize_rel_pos_bias_table_simple(t, (12, 12), (23 * 23, 3))
        torch.testing.assert_close(resize_rel_pos_bias_table(t, 12), ref)

    def test_wrong_table_size(self):
        with pytest.raises(ValueError, match='old_window_size'):
            resize_rel_pos_bias_table(torch.randn(50, 3), 7, (4, 4))
        with pytest.raises(ValueError, match='old_window_size'):
            resize_rel_pos_bias_table(torch.randn(50, 3), 7)


class TestModule:
    def test_bias_gathers_table(self):
        torch.manual_seed(0)
        m = RelativePositionBias((3, 4), num_heads=2)
        bias = m()
        assert bias.shape == (2, 12, 12)
        idx = _brute_force_index(3, 4)
        torch.testing.assert_close(bias[1], m.relative_position_bias_table[:, 1][idx])

    def test_index_not_saved_and_bias_fresh(self):
        m = RelativePositionBias(4, num_heads=2)
        assert 'relative_position_index' not in m.state_dict()
        with torch.no_grad():
            a = m((6, 6))
            m.relative_position_bias_table.mul_(2)
            b = m((6, 6))
            m.relative_position_bias_table.data.mul_(2)  # as EMA hooks write: no version change
            c = m((6, 6))
        torch.testing.assert_close(b, 2 * a)
        torch.testing.assert_close(c, 4 * a)

    def test_load_table_from_other_window(self):
        src = RelativePositionBias(7, num_heads=3)
        dst = RelativePositionBias(12, num_heads=3)
        dst.load_state_dict(src.state_dict())
        ref = resize_rel_pos_bias_table(src.relative_position_bias_table.detach(), 12)
        torch.testing.assert_close(dst.relative_position_bias_table.detach(), ref)

    def test_load_table_with_wrong_heads_fails(self):
        dst = RelativePositionBias(7, num_heads=3)
        with pytest.raises(RuntimeError, match='relative_position_bias_table'):
            dst.load_state_dict({'relative_position_bias_table': torch.randn(169, 4)})

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match='window_size'):
            RelativePositionBias((0, 7), 2)
        with pytest.raises(ValueError, match='num_heads'):
            RelativePositionBias(7, 0)

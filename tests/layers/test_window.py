import pytest
import torch

from vitpe_mm.layers import padded_size, shifted_window_attn_mask, window_partition, window_reverse


@pytest.mark.parametrize('hw,win', [((14, 14), 7), ((15, 22), 7), ((5, 3), (4, 2)), ((1, 1), 7)])
def test_partition_reverse_identity(hw, win):
    x = torch.randn(2, *hw, 5)
    windows, padded = window_partition(x, win)
    assert padded == padded_size(hw, win)
    mh, mw = (win, win) if isinstance(win, int) else win
    assert windows.shape == (2 * padded[0] // mh * padded[1] // mw, mh * mw, 5)
    assert torch.equal(window_reverse(windows, win, padded, hw), x)


def test_partition_window_content_and_padding():
    x = torch.arange(1, 5 * 6 + 1, dtype=torch.float32).reshape(1, 5, 6, 1)
    windows, padded = window_partition(x, 4)
    assert padded == (8, 8)
    first = windows[0, :, 0].reshape(4, 4)
    assert torch.equal(first, x[0, :4, :4, 0])
    last = windows[3, :, 0].reshape(4, 4)  # bottom-right window: 1x2 real tokens, the rest zero padding
    assert torch.equal(last[:1, :2], x[0, 4:, 4:, 0])
    assert last[1:].abs().sum() == 0 and last[:, 2:].abs().sum() == 0


def _regions(hp, wp, win, shift):
    lab = torch.zeros(hp, wp, dtype=torch.long)
    rows = [range(0, hp - win), range(hp - win, hp - shift), range(hp - shift, hp)]
    cols = [range(0, wp - win), range(wp - win, wp - shift), range(wp - shift, wp)]
    for i, rr in enumerate(rows):
        for j, cc in enumerate(cols):
            for r in rr:
                for c in cc:
                    lab[r, c] = 3 * i + j
    return lab


@pytest.mark.parametrize('hp,wp,win,shift', [(14, 14, 7, 3), (8, 12, 4, 2), (4, 4, 4, 2)])
def test_shift_mask_blocks_across_regions(hp, wp, win, shift):
    mask = shifted_window_attn_mask((hp, wp), win, shift)
    labels, _ = window_partition(_regions(hp, wp, win, shift)[None, :, :, None].float(), win)
    labels = labels[..., 0]
    same = labels[:, :, None] == labels[:, None, :]
    assert mask.shape == (hp * wp // win // win, win * win, win * win)
    assert torch.all(mask[same] == 0)
    assert torch.all(torch.isinf(mask[~same]) & (mask[~same] < 0))
    # masked scores: softmax puts zero weight across regions
    scores = torch.randn_like(mask) + mask
    probs = scores.softmax(-1)
    assert torch.all(probs[~same] == 0)
    # with several windows the top-left one never mixes regions; the bottom-right one always does
    if hp > win and wp > win:
        assert torch.all(mask[0] == 0)
    assert torch.any(mask[-1] != 0)


def test_shift_mask_is_cached():
    a = shifted_window_attn_mask((14, 21), 7, 3)
    assert shifted_window_attn_mask((14, 21), 7, 3) is a
    assert shifted_window_attn_mask((21, 14), 7, 3) is not a


def test_bad_arguments():
    with pytest.raises(ValueError, match='padded_hw'):
        shifted_window_attn_mask((15, 14), 7, 3)
    with pytest.raises(ValueError, match='shift_size'):
        shifted_window_attn_mask((14, 14), 7, 7)
    with pytest.raises(ValueError, match='window_size'):
        window_partition(torch.randn(1, 4, 4, 2), 0)
    with pytest.raises(ValueError, match='B, H, W, C'):
        window_partition(torch.randn(4, 4, 2), 2)


def test_shift_along_one_axis_only():
    # timm's rule for a window clamped to a small map: no shift along that axis, one band
    mask = shifted_window_attn_mask((7, 14), 7, (0, 3))
    labels, _ = window_partition(_regions_1d_w(7, 14, 7, 3)[None, :, :, None].float(), 7)
    same = labels[..., 0][:, :, None] == labels[..., 0][:, None, :]
    assert torch.all(mask[same] == 0) and torch.all(torch.isinf(mask[~same]))
    with pytest.raises(ValueError, match='shift_size'):
        shifted_window_attn_mask((14, 14), 7, (0, 0))
    with pytest.raises(ValueError, match='shift_size'):
        shifted_window_attn_mask((14, 14), 7, (-1, 3))


def _regions_1d_w(hp, wp, win, shift):
    lab = torch.zeros(hp, wp, dtype=torch.long)
    lab[:, wp - win:wp - shift] = 1
    lab[:, wp - shift:] = 2
    return lab

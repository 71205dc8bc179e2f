"""Bugs in the reference implementations that vitpe_mm does not copy, each shown on the reference itself.

mmseg's Twins `LocallyGroupedSelfAttention` (mmseg/models/backbones/twins.py) builds its padding mask with
`mask[:, -pad_b:, :]` and `mask[:, :, -pad_r:]`. When one pad is 0, `-0:` selects the whole axis, so every
token is marked as padding, the mask difference is 0 everywhere and nothing is masked: real tokens in the
border windows attend to the zero padding of the other axis. Our window helpers pad with zeros at the
bottom/right and index only with explicit sizes (no negative slicing).
"""

import pytest
import torch

from vitpe_mm.layers import MultiheadSelfAttention, window_partition, window_reverse
from vitpe_mm.models.swin import SwinBlock

from conftest import perturb

C, HEADS, WINDOW = 16, 2, 7


@pytest.fixture(scope='module')
def lsa_pair():
    """mmseg's LSA with random weights and our fused attention holding the same qkv/proj weights."""
    pytest.importorskip('mmcv.ops', reason='mmcv with ops (built by tools/setup_env.sh) is needed by mmdet/mmseg')
    from mmseg.models.backbones.twins import LocallyGroupedSelfAttention
    torch.manual_seed(0)
    lsa = perturb(LocallyGroupedSelfAttention(C, HEADS, qkv_bias=True, window_size=WINDOW).eval(), std=0.1)
    attn = MultiheadSelfAttention(C, HEADS, qkv_bias=True).eval()
    attn.load_state_dict(lsa.state_dict())  # same names: qkv, proj
    return lsa, attn


def _window_attention(attn, x, hw, mask_padding: bool) -> torch.Tensor:
    """Attention within zero-padded windows; with `mask_padding` the padded keys are excluded (correct)."""
    b, n, c = x.shape
    windows, padded = window_partition(x.view(b, *hw, c), WINDOW)  # B*nW, N, C
    bias = None
    if mask_padding:
        real, _ = window_partition(torch.ones(1, *hw, 1), WINDOW)  # nW, N, 1: 1 on real tokens, 0 on padding
        bias = torch.zeros(real.shape[0], 1, 1, real.shape[1]).masked_fill(real[:, None, None, :, 0] == 0,
                                                                          float('-inf'))  # nW, 1, 1, N (keys)
        bias = bias.expand(-1, 1, real.shape[1], -1)  # nW, 1, N, N
    with torch.no_grad():
        out = attn(windows, bias)
    return window_reverse(out, WINDOW, padded, hw).reshape(b, n, c)


@pytest.mark.parametrize('hw', [(10, 12), (7, 7), (14, 21)])
def test_mmseg_lsa_is_right_when_both_or_no_pads(lsa_pair, hw):
    lsa, attn = lsa_pair
    x = torch.randn(2, hw[0] * hw[1], C)
    with torch.no_grad():
        torch.testing.assert_close(lsa(x, hw), _window_attention(attn, x, hw, mask_padding=True), atol=1e-5, rtol=0)


@pytest.mark.parametrize('hw, border', [((10, 14), 'bottom'), ((14, 10), 'right')])
def test_mmseg_lsa_masks_nothing_when_one_pad_is_zero(lsa_pair, hw, border):
    """(10, 14): pad_b = 4, pad_r = 0 -> `mask[:, :, -0:]` marks every token as padding; likewise (14, 10)."""
    lsa, attn = lsa_pair
    x = torch.randn(2, hw[0] * hw[1], C)
    with torch.no_grad():
        out = lsa(x, hw)
    correct = _window_attention(attn, x, hw, mask_padding=True)
    unmasked = _window_attention(attn, x, hw, mask_padding=False)
    # what mmseg computes is attention over real tokens *and* zero padding, with no mask at all
    torch.testing.assert_close(out, unmasked, atol=1e-5, rtol=0)
    diff = (out - correct).abs().view(2, *hw, C).amax(dim=(0, 3))  # H, W
    print(f'mmseg LSA at {hw}: max abs diff to the correctly masked result {diff.max().item():.3g}')
    # windows away from the padded border are right; every window on it is wrong
    inner = diff[:7, :] if border == 'bottom' else diff[:, :7]
    edge = diff[7:, :] if border == 'bottom' else diff[:, 7:]
    assert inner.max() < 1e-5
    assert edge.amin() > 1e-4


def test_mmseg_lsa_mask_construction_marks_everything_as_padding():
    """The two mask lines of mmseg's LSA, as written, vs the mask of the padded region."""
    hp, wp, pad_b, pad_r = 14, 14, 4, 0
    mask = torch.zeros((1, hp, wp))
    mask[:, -pad_b:, :].fill_(1)
    mask[:, :, -pad_r:].fill_(1)  # -0: is the whole axis
    correct = torch.zeros((1, hp, wp))
    correct[:, hp - pad_b:, :] = 1
    correct[:, :, wp - pad_r:] = 1
    assert mask.all() and correct.sum() == pad_b * wp


@pytest.mark.parametrize('hw', [(10, 14), (14, 10), (10, 12), (14, 14), (3, 9)])
def test_our_window_padding_is_only_where_it_should_be(hw):
    h, w = hw
    x = torch.randn(2, h, w, C)
    windows, (hp, wp) = window_partition(x, WINDOW)
    assert (hp, wp) == (-(-h // WINDOW) * WINDOW, -(-w // WINDOW) * WINDOW)
    torch.testing.assert_close(window_reverse(windows, WINDOW, (hp, wp), hw), x, atol=0, rtol=0)
    real, _ = window_partition(torch.ones(1, h, w, 1), WINDOW)
    real_map = window_reverse(real, WINDOW, (hp, wp), (hp, wp))[0, ..., 0]  # Hp, Wp
    expected = torch.zeros(hp, wp)
    expected[:h, :w] = 1
    torch.testing.assert_close(real_map, expected, atol=0, rtol=0)


def test_our_swin_block_keeps_real_tokens_independent_of_the_pad_axis():
    """At (10, 14) (bottom padding only) the top window row of our Swin block sees no padding: it equals
    the block run on the top 7 rows alone (no window there is padded)."""
    torch.manual_seed(0)
    block = SwinBlock(C, HEADS, (WINDOW, WINDOW), shifted=False).eval()
    x = torch.randn(1, 10 * 14, C)
    with torch.no_grad():
        full = block(x, (10, 14)).view(1, 10, 14, C)
        top = block(x.view(1, 10, 14, C)[:, :7].reshape(1, 7 * 14, C), (7, 14)).view(1, 7, 14, C)
    torch.testing.assert_close(full[:, :7], top, atol=1e-6, rtol=0)

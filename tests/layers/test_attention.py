import pytest
import torch

from vitpe_mm.layers import MultiheadSelfAttention, RelativePositionBias, attention_with_bias, shifted_window_attn_mask


def _explicit(q, k, v, bias, scale):
    scores = q @ k.transpose(-2, -1) * scale
    if bias is not None:
        scores = scores + bias
    return scores.softmax(-1) @ v


def test_fused_equals_explicit_with_bias():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 49, 8).unbind(0)
    bias = torch.randn(4, 49, 49)
    out = attention_with_bias(q, k, v, bias, scale=0.3)
    torch.testing.assert_close(out, _explicit(q, k, v, bias, 0.3), atol=1e-5, rtol=0)


def test_windows_bias_plus_shift_mask_equals_explicit():
    torch.manual_seed(0)
    b, hp, wp, win, heads, d = 2, 14, 21, 7, 3, 4
    mask = shifted_window_attn_mask((hp, wp), win, 3)  # nW, N, N
    rpb = RelativePositionBias(win, heads).eval()
    bias = rpb()[None] + mask[:, None]  # nW, nH, N, N
    n_win = mask.shape[0]
    q, k, v = torch.randn(3, b * n_win, heads, win * win, d).unbind(0)
    out = attention_with_bias(q, k, v, bias, scale=d ** -0.5)
    # explicit: repeat the per-window bias for each image
    full_bias = bias.repeat(b, 1, 1, 1)
    ref = _explicit(q, k, v, full_bias, d ** -0.5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_module_equals_explicit():
    torch.manual_seed(0)
    attn = MultiheadSelfAttention(16, 4).eval()
    x = torch.randn(2, 10, 16)
    bias = torch.randn(4, 10, 10)
    q, k, v = attn.qkv(x).reshape(2, 10, 3, 4, 4).permute(2, 0, 3, 1, 4)
    ref = _explicit(q, k, v, bias, 4 ** -0.5).transpose(1, 2).reshape(2, 10, 16)
    torch.testing.assert_close(attn(x, bias), attn.proj(ref), atol=1e-5, rtol=0)


def test_window_count_must_divide_batch():
    q = torch.randn(5, 2, 4, 8)
    with pytest.raises(ValueError, match='windows'):
        attention_with_bias(q, q, q, torch.zeros(2, 2, 4, 4))


def test_heads_must_divide_dims():
    with pytest.raises(ValueError, match='num_heads'):
        MultiheadSelfAttention(10, 3)

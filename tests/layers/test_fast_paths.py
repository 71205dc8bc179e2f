"""The speed paths: windows as cached gathers, and the explicit attention used where the CPU kernel is slow."""
import pytest
import torch
import torch.nn.functional as F

from vitpe_mm.layers import shifted_window_attn_mask, window_partition, window_reverse
from vitpe_mm.layers.attention import _explicit_attention, attention_with_bias, use_fused_attention
from vitpe_mm.layers.window import tokens_from_windows, window_rows, window_token_index, windows_from_qkv

CASES = [((10, 13), (7, 7), (3, 3)), ((14, 14), (7, 7), (0, 0)), ((5, 9), (5, 7), (0, 3)), ((7, 20), (7, 7), (3, 0)),
         ((16, 16), (7, 7), (3, 3)), ((9, 11), (4, 4), (0, 0))]


@pytest.mark.parametrize('hw, window, shift', CASES)
def test_window_token_index_is_pad_roll_partition(hw, window, shift):
    (h, w), (mh, mw), (sh, sw) = hw, window, shift
    source, slots, pad_slots = window_token_index(hw, window, shift)
    hp, wp = -(-h // mh) * mh, -(-w // mw) * mw
    ids = F.pad(torch.arange(h * w).view(1, h, w, 1).float(), (0, 0, 0, wp - w, 0, hp - h), value=-1)
    ids = torch.roll(ids, (-sh, -sw), (1, 2))
    expected = window_partition(ids, window)[0].reshape(-1).long()
    assert torch.equal(source, expected)
    assert torch.equal(source[slots], torch.arange(h * w))
    assert torch.equal(pad_slots.sort().values, (expected < 0).nonzero().squeeze(1))


def _reference_window_attention(qkv_layer, x, hw, window, shift, heads, bias):
    """Explicit pad -> roll -> partition -> attention -> reverse -> roll back -> crop (the Swin code)."""
    b, _, c = x.shape
    h, w = hw
    mh, mw = window
    hp, wp = -(-h // mh) * mh, -(-w // mw) * mw
    m = F.pad(x.view(b, h, w, c), (0, 0, 0, wp - w, 0, hp - h))
    m = torch.roll(m, (-shift[0], -shift[1]), (1, 2))
    win, _ = window_partition(m, window)
    q, k, v = qkv_layer(win).view(win.shape[0], -1, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) * (c // heads) ** -0.5
    if bias is not None:
        scores = (scores.view(b, -1, *scores.shape[1:]) + bias).view_as(scores)
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(win.shape[0], -1, c)
    m = torch.roll(window_reverse(out, window, (hp, wp), (hp, wp)), shift, (1, 2))
    return m[:, :h, :w].reshape(b, h * w, c)


@pytest.mark.parametrize('hw, window, shift', CASES)
@pytest.mark.parametrize('batch', [1, 3])
def test_window_gathers_match_pad_roll_partition_with_gradients(hw, window, shift, batch):
    torch.manual_seed(0)
    heads, c = 2, 8
    qkv = torch.nn.Linear(c, 3 * c)
    with torch.no_grad():
        qkv.bias.normal_()  # the padding tokens' q, k, v are this bias
    x = torch.randn(batch, hw[0] * hw[1], c, requires_grad=True)
    hp, wp = -(-hw[0] // window[0]) * window[0], -(-hw[1] // window[1]) * window[1]
    bias = shifted_window_attn_mask((hp, wp), window, shift)[:, None] if shift != (0, 0) else None
    expected = _reference_window_attention(qkv, x, hw, window, shift, heads, bias)
    grad = torch.randn_like(expected)
    ref_grads = torch.autograd.grad(expected, [x, qkv.weight, qkv.bias], grad)

    rows = window_rows(hw, window, shift, heads)
    q, k, v = windows_from_qkv(qkv(x), qkv.bias, rows, heads)
    out = attention_with_bias(q, k, v, bias)  # explicit product on CPU (small windows)
    out = tokens_from_windows(out, rows, batch)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    for got, ref in zip(torch.autograd.grad(out, [x, qkv.weight, qkv.bias], grad), ref_grads):
        torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_window_rows_are_cached_per_size():
    assert window_rows((10, 13), 7, (3, 3), 2) is window_rows((10, 13), (7, 7), 3, 2)
    assert window_rows((10, 13), 7, (3, 3), 2) is not window_rows((10, 14), 7, (3, 3), 2)


@pytest.mark.parametrize('q_shape, bias_shape', [
    ((2, 3, 10, 4), None), ((2, 3, 10, 4), (3, 10, 10)), ((2, 3, 10, 4), (1, 1, 10, 10)),
    ((2, 3, 10, 4), (2, 3, 10, 10)), ((6, 3, 10, 4), (3, 3, 10, 10)), ((6, 3, 10, 4), (3, 1, 10, 10)),
    ((2, 3, 10, 4), 'bool'),
])
def test_explicit_attention_equals_sdpa_with_gradients(q_shape, bias_shape):
    torch.manual_seed(0)
    q, k, v = (torch.randn(q_shape, requires_grad=True) for _ in range(3))
    if bias_shape == 'bool':
        bias = torch.rand(2, 3, 10, 10) > 0.3
        bias[..., 0] = True
        full = bias
    elif bias_shape is None:
        bias = full = None
    else:
        bias = torch.randn(bias_shape, requires_grad=True)
        windows = len(bias_shape) == 4 and bias_shape[0] not in (1, q_shape[0])  # per-window bias, repeated
        full = bias.repeat(q_shape[0] // bias_shape[0], 1, 1, 1) if windows else bias
    out = _explicit_attention(q, k, v, bias, 0.0, 0.3)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=full, scale=0.3)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    inputs = [q, k, v] + ([bias] if bias is not None and bias.requires_grad else [])
    grad = torch.randn_like(out)
    for got, exp in zip(torch.autograd.grad(out, inputs, grad), torch.autograd.grad(ref, inputs, grad)):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)


def test_fused_kernel_policy(monkeypatch):
    small = torch.randn(4, 3, 49, 32)
    large = torch.randn(1, 1, 4096, 64)
    keys = torch.randn(1, 1, 256, 64)
    assert not use_fused_attention(small, small, needs_grad=False)  # 7x7 windows: explicit on CPU
    assert use_fused_attention(large, keys, needs_grad=False)
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    assert not use_fused_attention(large, keys, needs_grad=True)  # 1 (batch, head) pair < 2 threads
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 1)
    assert use_fused_attention(large, keys, needs_grad=True)
    # small windows stay explicit in bf16 too (faster, less training memory, the references' accuracy)
    assert not use_fused_attention(small.bfloat16(), small.bfloat16(), needs_grad=False)
    assert use_fused_attention(large.bfloat16(), keys.bfloat16(), needs_grad=True)  # float32 softmax inside


@pytest.mark.parametrize('shape, splits', [((1, 1, 256, 16), 2), ((2, 3, 192, 8), 3), ((1, 2, 128, 16), 4)])
def test_fused_split_queries_equals_explicit_with_gradients(shape, splits):
    from vitpe_mm.layers.attention import _fused_split_queries
    torch.manual_seed(0)
    b, h, n, d = shape
    q = torch.randn(b, n, h, d).transpose(1, 2).requires_grad_(True)  # strided, as a qkv view
    k = torch.randn(b, h, 40, d, requires_grad=True)
    v = torch.randn(b, h, 40, d, requires_grad=True)
    expected = _explicit_attention(q, k, v, None, 0.0, 0.3)
    out = _fused_split_queries(q, k, v, 0.0, 0.3, splits)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(expected)
    for a, e in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(expected, (q, k, v), grad)):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


def test_query_splits_only_for_few_pairs_with_grad(monkeypatch):
    from vitpe_mm.layers.attention import cpu_query_splits
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 4)
    q, k = torch.randn(1, 1, 16384, 64), torch.randn(1, 1, 256, 64)
    assert cpu_query_splits(q, k, None, needs_grad=True) == 4
    assert cpu_query_splits(q, k, None, needs_grad=False) == 1  # inference: the fused forward is parallel
    assert cpu_query_splits(q.expand(2, 2, -1, -1), k.expand(2, 2, -1, -1), None, True) == 1  # enough pairs
    assert cpu_query_splits(q, k, torch.zeros(1, 16384, 256), True) == 1  # a bias keeps the explicit path
    assert cpu_query_splits(q[:, :, :16383], k, None, True) == 1  # queries that do not divide
    assert cpu_query_splits(q.expand(1, 3, -1, -1), k.expand(1, 3, -1, -1), None, True) == 2


@pytest.mark.slow
def test_query_split_compiles_in_one_graph_and_matches(monkeypatch):
    """The split runs under torch.compile too (fullgraph: no break), with the eager values and gradients."""
    from vitpe_mm.layers.attention import attention_with_bias, cpu_query_splits
    monkeypatch.setattr(torch, 'get_num_threads', lambda: 2)
    torch._dynamo.reset()
    q = torch.randn(1, 1, 256, 16, requires_grad=True)
    k = torch.randn(1, 1, 128, 16, requires_grad=True)
    v = torch.randn(1, 1, 128, 16, requires_grad=True)
    assert cpu_query_splits(q, k, None, needs_grad=True) == 2
    compiled = torch.compile(attention_with_bias, fullgraph=True, dynamic=False)
    out, expected = compiled(q, k, v), _explicit_attention(q, k, v, None, 0.0, 16 ** -0.5)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grad = torch.randn_like(out)
    for a, e in zip(torch.autograd.grad(out, (q, k, v), grad), torch.autograd.grad(expected, (q, k, v), grad)):
        torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)

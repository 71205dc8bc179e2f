import pytest
import torch
from timm.layers import resample_abs_pos_embed as timm_resample

from vitpe_mm.layers import AbsolutePositionEmbedding, build_sincos_2d_pos_embed, resample_abs_pos_embed


def _table(h, w, prefix=1, c=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, prefix + h * w, c, generator=g)


def test_identity_on_same_grid_is_exact():
    pe = _table(7, 9)
    out = resample_abs_pos_embed(pe, (7, 9), (7, 9))
    assert out is pe


@pytest.mark.parametrize('old,new', [((14, 14), (20, 30)), ((14, 14), (8, 5)), ((6, 10), (12, 4)), ((5, 7), (5, 9))])
@pytest.mark.parametrize('mode,antialias', [('bicubic', True), ('bicubic', False), ('bilinear', True)])
def test_matches_timm_non_square(old, new, mode, antialias):
    pe = _table(*old, prefix=1)
    ours = resample_abs_pos_embed(pe, new, old, 1, mode, antialias)
    ref = timm_resample(pe, list(new), list(old), 1, mode, antialias)
    assert ours.shape == (1, 1 + new[0] * new[1], 16)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize('prefix', [0, 1, 2])
def test_prefix_tokens_untouched(prefix):
    pe = _table(6, 6, prefix=prefix)
    out = resample_abs_pos_embed(pe, (9, 4), (6, 6), prefix)
    assert torch.equal(out[:, :prefix], pe[:, :prefix])
    assert out.shape[1] == prefix + 36


def test_grid_not_token_count_decides():
    # 32x32 and 16x64 hold the same 1024 tokens: a count shortcut would return the table unchanged.
    pe = _table(32, 32, prefix=1, c=8)
    out = resample_abs_pos_embed(pe, (16, 64), (32, 32), 1)
    assert out.shape == pe.shape
    assert not torch.allclose(out, pe)
    ref = timm_resample(pe, [16, 64], [32, 32], 1)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)


def test_float32_computation_and_dtype_kept():
    pe = _table(8, 8).to(torch.bfloat16)
    out = resample_abs_pos_embed(pe, (12, 12), (8, 8))
    assert out.dtype == torch.bfloat16
    ref = resample_abs_pos_embed(pe.float(), (12, 12), (8, 8)).to(torch.bfloat16)
    assert torch.equal(out, ref)


def test_constant_table_stays_constant():
    pe = torch.ones(1, 1 + 8 * 8, 4) * 3.0
    out = resample_abs_pos_embed(pe, (5, 13), (8, 8), antialias=False)
    torch.testing.assert_close(out, torch.full_like(out, 3.0))


@pytest.mark.parametrize('kwargs,match', [
    (dict(new_size=(0, 4)), 'new_size'),
    (dict(new_size=(4, 4), old_size=(5, 5)), 'old_size'),
    (dict(new_size=(4, 4), interpolation='lanczos'), 'interpolation'),
    (dict(new_size=(4, -1)), 'new_size'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        resample_abs_pos_embed(_table(6, 6), **kwargs)


def test_non_square_without_old_size_is_refused():
    with pytest.raises(ValueError, match='old_size'):
        resample_abs_pos_embed(_table(4, 6), (8, 8))


def test_sincos_table_properties():
    t = build_sincos_2d_pos_embed((4, 6), 32)
    assert t.shape == (1, 24, 32)
    # row 0, col 0: sin(0)=0 in the sin halves, cos(0)=1 in the cos halves
    torch.testing.assert_close(t[0, 0, :8], torch.zeros(8))
    torch.testing.assert_close(t[0, 0, 8:16], torch.ones(8))
    # tokens in the same column share the x half; same row share the y half
    grid = t.reshape(4, 6, 32)
    torch.testing.assert_close(grid[0, 3, :16], grid[2, 3, :16])
    torch.testing.assert_close(grid[1, 0, 16:], grid[1, 5, 16:])
    with pytest.raises(ValueError, match='multiple of 4'):
        build_sincos_2d_pos_embed((4, 4), 30)


class TestModuleFreshness:
    def test_recomputed_at_every_call_even_after_data_writes(self):
        # mmengine's EMA hooks write through `.data`: neither the version counter nor the storage changes, so
        # no cache keyed on them can see it; the table is recomputed at every call instead
        pe = AbsolutePositionEmbedding((8, 8), 16)
        with torch.no_grad():
            a = pe((10, 12)).clone()
            pe.pos_embed.data.add_(1.0)
            b = pe((10, 12))
            c = pe((12, 10))
        torch.testing.assert_close(b, a + 1.0, atol=1e-5, rtol=0)
        assert c.shape[1] == 1 + 120
        assert pe((8, 8)) is pe.pos_embed

    def test_fresh_after_parameter_is_modified(self):
        pe = AbsolutePositionEmbedding((8, 8), 16)
        with torch.no_grad():
            a = pe((10, 12)).clone()
            pe.pos_embed.add_(1.0)  # what an optimizer step does
            b = pe((10, 12))
        torch.testing.assert_close(b, a + 1.0, atol=1e-5, rtol=0)

    def test_fresh_after_load_state_dict(self):
        pe = AbsolutePositionEmbedding((8, 8), 16)
        with torch.no_grad():
            a = pe((4, 4)).clone()
        pe.load_state_dict({'pos_embed': torch.zeros_like(pe.pos_embed)})
        with torch.no_grad():
            b = pe((4, 4))
        assert a.abs().sum() > 0 and b.abs().sum() == 0

    def test_training_resamples_with_gradient(self):
        pe = AbsolutePositionEmbedding((8, 8), 16)
        out = pe((10, 12))
        out.sum().backward()
        assert pe.pos_embed.grad is not None and pe.pos_embed.grad.abs().sum() > 0
        out2 = pe((10, 12))
        out2.sum().backward()  # a cached graph would fail here

    def test_load_from_other_grid_resamples(self):
        src = AbsolutePositionEmbedding((14, 14), 16)
        dst = AbsolutePositionEmbedding((20, 20), 16)
        dst.load_state_dict(src.state_dict())
        ref = resample_abs_pos_embed(src.pos_embed.detach(), (20, 20), (14, 14), 1)
        torch.testing.assert_close(dst.pos_embed.detach(), ref)

    def test_nointerp_crops_and_refuses_larger(self):
        pe = AbsolutePositionEmbedding((8, 8), 16, interpolate=False)
        out = pe((3, 5))
        grid = pe.pos_embed[:, 1:].reshape(8, 8, 16)
        torch.testing.assert_close(out[0, 1:], grid[:3, :5].reshape(15, 16))
        with pytest.raises(ValueError, match='larger than the absolute PE grid'):
            pe((9, 4))


def test_size_cache_is_lru_bounded_in_bytes():
    from vitpe_mm.layers import SizeCache
    cache = SizeCache(max_bytes=3 * 400)  # three 100-float entries
    calls = []
    for key in [1, 2, 3, 1, 4]:  # 1 is used again, so 2 is the least recent when 4 arrives
        cache.get(key, lambda k=key: calls.append(k) or torch.full((100,), float(k)))
    assert len(cache) == 3 and cache.nbytes == 1200
    assert calls == [1, 2, 3, 4]
    cache.get(1, lambda: calls.append('again') or torch.zeros(100))
    cache.get(2, lambda: calls.append('2 rebuilt') or torch.zeros(100))
    assert calls[-1] == '2 rebuilt' and 'again' not in calls
    big = cache.get('big', lambda: torch.zeros(1000))  # larger than the whole bound: returned, not kept
    assert big.numel() == 1000 and 'big' not in cache and cache.nbytes <= cache.max_bytes
    with pytest.raises(ValueError, match='max_bytes'):
        SizeCache(-1)


def test_size_cache_never_keeps_inference_tensors():
    from vitpe_mm.layers import SizeCache
    cache = SizeCache(max_bytes=1 << 20)
    with torch.inference_mode():
        value = cache.get('k', lambda: torch.arange(4.0))
    assert not value.is_inference()
    w = torch.ones(4, requires_grad=True)
    (w * cache.get('k', lambda: None)).sum().backward()  # saved for backward: fails for an inference tensor
    assert torch.equal(w.grad, torch.arange(4.0))

import pytest
import torch

from vitpe_mm.layers import PosConvEncoding


def _peg(c=8, k=3, seed=0):
    torch.manual_seed(seed)
    peg = PosConvEncoding(c, k)
    torch.nn.init.normal_(peg.proj[0].weight)
    torch.nn.init.normal_(peg.proj[0].bias)
    return peg.eval()


@pytest.mark.parametrize('hw', [(1, 1), (7, 7), (5, 13), (16, 3)])
def test_shape_preserved(hw):
    peg = _peg()
    x = torch.randn(2, hw[0] * hw[1], 8)
    assert peg(x, hw).shape == x.shape


def test_is_residual_depthwise_conv():
    peg = _peg(k=5)
    x = torch.randn(1, 6 * 9, 8)
    feat = x.transpose(1, 2).reshape(1, 8, 6, 9)
    ref = torch.nn.functional.conv2d(feat, peg.proj[0].weight, peg.proj[0].bias, padding=2, groups=8) + feat
    torch.testing.assert_close(peg(x, (6, 9)), ref.flatten(2).transpose(1, 2))


def test_translation_equivariant_away_from_borders():
    peg = _peg()
    h, w = 12, 12
    img = torch.randn(1, 8, h, w)
    shifted = torch.roll(img, shifts=(2, 3), dims=(2, 3))
    to_tokens = lambda m: m.flatten(2).transpose(1, 2)  # noqa: E731
    out = peg(to_tokens(img), (h, w)).transpose(1, 2).reshape(1, 8, h, w)
    out_s = peg(to_tokens(shifted), (h, w)).transpose(1, 2).reshape(1, 8, h, w)
    # interior of the shifted output (away from borders and the wrapped band) = shifted interior
    torch.testing.assert_close(out_s[..., 4:h - 1, 5:w - 1], out[..., 2:h - 3, 2:w - 4], atol=1e-5, rtol=0)


def test_zero_padding_leaks_absolute_position():
    peg = _peg()
    x = torch.ones(1, 6 * 6, 8)  # a constant input: only the border can tell positions apart
    out = peg(x, (6, 6)).reshape(6, 6, 8)
    interior = out[1:5, 1:5]
    assert torch.allclose(interior, interior[0, 0].expand_as(interior))
    assert not torch.allclose(out[0, 0], out[2, 2])
    assert not torch.allclose(out[0, 2], out[2, 2])
    assert not torch.allclose(out[0, 0], out[0, 2])  # corner differs from edge


def test_prefix_tokens_pass_through():
    torch.manual_seed(0)
    peg = PosConvEncoding(8, 3, num_prefix_tokens=1)
    x = torch.randn(2, 1 + 20, 8)
    out = peg(x, (4, 5))
    assert torch.equal(out[:, :1], x[:, :1])


@pytest.mark.parametrize('k', [2, 4, 1, 0, -3])
def test_bad_kernel(k):
    with pytest.raises(ValueError, match='kernel_size'):
        PosConvEncoding(8, k)


def test_hw_shape_must_match_tokens():
    peg = _peg()
    with pytest.raises(ValueError, match='hw_shape'):
        peg(torch.randn(1, 30, 8), (4, 8))
    with pytest.raises(ValueError, match='hw_shape'):
        peg(torch.randn(1, 30, 8), (0, 30))

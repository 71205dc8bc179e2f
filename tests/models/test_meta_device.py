"""All three backbones build on the meta device (no memory, no init) and, once a state dict is assigned, compute
what the same model built normally computes: the non-saved relative position index is rebuilt on load."""
import pytest
import torch

from vitpe_mm.models import CPVTv2, SwinRPB, ViTPE

TINY_VIT = dict(embed_dims=32, num_layers=2, num_heads=2)
CASES = [
    (ViTPE, dict(arch=TINY_VIT, img_size=64, drop_path_rate=0.1)),
    (ViTPE, dict(arch=TINY_VIT, img_size=64, pe_type='rel_bias')),
    (ViTPE, dict(arch=TINY_VIT, img_size=64, with_cls_token=False, window_size=2, pe_type='rel_bias',
                 out_type='sfp')),
    (CPVTv2, dict(arch='small', drop_path_rate=0.1)),
    (CPVTv2, dict(arch='small', pe_type='rel_bias')),
    (SwinRPB, dict(arch='tiny', drop_path_rate=0.1)),
]


@pytest.mark.parametrize('cls,kwargs', CASES, ids=lambda v: v.__name__ if isinstance(v, type) else
                         '-'.join(f'{k}={v}' for k, v in v.items() if k != 'arch'))
def test_meta_build_then_assign(cls, kwargs):
    with torch.device('meta'):
        empty = cls(**kwargs)
    assert all(p.is_meta for p in empty.parameters())
    torch.manual_seed(0)
    real = cls(**kwargs).eval()
    empty.load_state_dict(real.state_dict(), assign=True)
    empty.eval()
    assert not any(t.is_meta for t in list(empty.parameters()) + list(empty.buffers()))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for got, expected in zip(empty(x), real(x), strict=True):
            torch.testing.assert_close(got, expected, atol=0, rtol=0)

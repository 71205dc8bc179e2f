"""torch.compile: every backbone compiles (CPU inductor needs a C++ compiler) and matches eager at changing sizes,
in inference and in training (outputs and parameter gradients).

`dynamic=False` (one static graph per input size, as `compile=dict(dynamic=False)` in an mmengine config) is
the supported mode: with symbolic sizes, torch 2.13's inductor fails on the strides of the token maps of the
pyramids ("cannot determine truth value of Relational"), see the README.
"""
import shutil

import pytest
import torch

from vitpe_mm.models.cpvt import CPVTv2
from vitpe_mm.models.swin import SwinRPB
from vitpe_mm.models.vit import ViTPE

from conftest import perturb

pytestmark = [
    pytest.mark.slow,  # inductor compiles C++ per graph: 20 s to a few minutes on a shared 2-core machine
    pytest.mark.skipif(shutil.which('g++') is None and shutil.which('c++') is None,
                       reason='torch.compile on CPU (inductor) needs a C++ compiler'),
]


def _build(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == 'vit':
        model = ViTPE(arch=dict(embed_dims=32, num_layers=2, num_heads=2))
    elif name == 'swin':
        model = SwinRPB(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), drop_path_rate=0.0)
    else:
        model = CPVTv2(arch=dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2),
                                 depths=(1, 2, 1, 1)), drop_path_rate=0.0)
    return perturb(model, seed=1, std=0.02)


def _loss_and_grads(model, x):
    model.zero_grad(set_to_none=True)
    outs = model(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    return outs, [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize('name', ['vit', 'swin', 'cpvt'])
def test_compiled_backbone_matches_eager_at_two_sizes(name):
    torch._dynamo.reset()
    model = _build(name)
    compiled = torch.compile(model, dynamic=False)
    # Two sizes, the second non-square and not a multiple of the patch / window: a new grid, new padding,
    # new window masks and resampled PEs; the compiled model must follow (a recompile per size).
    for hw in [(96, 128), (100, 70)]:
        x = torch.randn(2, 3, *hw)
        model.eval()
        with torch.no_grad():
            expected, out = model(x), compiled(x)
        assert len(out) == len(expected)
        for o, e in zip(out, expected):
            assert o.shape == e.shape
            torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)
        model.train()
        expected, expected_grads = _loss_and_grads(model, x)
        out, grads = _loss_and_grads(compiled, x)
        for o, e in zip(out, expected):
            torch.testing.assert_close(o, e, atol=1e-5, rtol=1e-5)
        for g, e in zip(grads, expected_grads):
            torch.testing.assert_close(g, e, atol=1e-4, rtol=1e-4)

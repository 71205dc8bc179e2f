"""The backbones on a CUDA device: the outputs and gradients of the CPU run (fp32), bf16 autocast close to fp32,
and the benchmark's CUDA measurement path. Marked `gpu`: skipped with the reason where no CUDA device is present
(tests/conftest.py)."""
import argparse

import pytest
import torch

from vitpe_mm.models.cpvt import CPVTv2
from vitpe_mm.models.swin import SwinRPB
from vitpe_mm.models.vit import ViTPE

from conftest import perturb

pytestmark = pytest.mark.gpu

BUILDERS = {
    'vit': lambda: ViTPE(arch=dict(embed_dims=32, num_layers=2, num_heads=2)),
    'cpvt': lambda: CPVTv2(arch=dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2),
                                     depths=(1, 2, 1, 1)), drop_path_rate=0.0),
    'swin': lambda: SwinRPB(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), drop_path_rate=0.0),
}
SIZE = (96, 160)  # non-square; not a multiple of Swin's 7x7 windows nor of ViT's patch at every stage


@pytest.fixture
def exact_cuda(monkeypatch):
    """fp32 kernels without TF32 (cuDNN convolutions use it by default), so CPU and CUDA agree closely."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision('highest')
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)
    yield
    torch.set_float32_matmul_precision(precision)


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return perturb(BUILDERS[name]())


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_cuda_outputs_and_gradients_match_cpu(name, exact_cuda):
    x = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    results = {}
    for device in ('cpu', 'cuda'):
        model = _model(name).to(device).train()
        outs = model(x.to(device))
        sum(o.float().mean() for o in outs).backward()
        results[device] = ([o.detach().cpu() for o in outs],
                           {k: p.grad.cpu() for k, p in model.named_parameters() if p.grad is not None})
    (cpu_outs, cpu_grads), (cuda_outs, cuda_grads) = results['cpu'], results['cuda']
    assert len(cuda_outs) == len(cpu_outs) >= 1
    for out, ref in zip(cuda_outs, cpu_outs):
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
    assert cuda_grads.keys() == cpu_grads.keys() and cpu_grads
    for key, ref in cpu_grads.items():
        torch.testing.assert_close(cuda_grads[key], ref, rtol=1e-3, atol=1e-5, msg=lambda m, key=key: f'{key}: {m}')


@pytest.mark.parametrize('name', sorted(BUILDERS))
def test_bf16_autocast_on_cuda_stays_close_to_fp32(name, exact_cuda):
    model = _model(name).cuda().eval()
    x = torch.randn(1, 3, *SIZE, device='cuda')
    with torch.no_grad():
        exact = model(x)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            low = model(x)
    for lo, ex in zip(low, exact):  # maps after a final norm come out in fp32 (autocast runs norms in fp32)
        assert torch.isfinite(lo).all()
        error = (lo.float() - ex).abs().max() / ex.abs().max().clamp(min=1)
        assert 0 < error < 0.05, error  # bf16 rounds (> 0), and stays a few percent of the map's scale at most


def test_benchmark_pair_on_cuda_measures_memory_and_matches(exact_cuda):
    pytest.importorskip('timm')
    from vitpe_mm.bench.measure import run_case
    from vitpe_mm.bench.pairs import CPVTTimm

    pair = CPVTTimm(tiny=True, device=torch.device('cuda'))
    options = argparse.Namespace(compile=False, warmup=1, repeats=2, no_memory=False, no_flops=True, peak_tflops=None)
    rows = run_case(pair, (64, 128), 2, 'fp32', ['fwd', 'fwdbwd'], options)
    assert [r['mode'] for r in rows] == ['fwd', 'fwdbwd'] and all(r['device'].startswith('cuda') for r in rows)
    for row in rows:
        assert row['max_scaled_diff'] is not None and row['max_scaled_diff'] <= 1e-4, row
        for side in ('ours', 'ref'):
            assert row[side]['mem_method'] == 'torch.cuda.max_memory_allocated' and row[side]['peak_mem_bytes'] > 0

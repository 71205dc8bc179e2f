"""Never stale, bounded (issue 12 §2): every backbone and PE type gives, after its weights change in any of the ways
training code changes them, exactly what a fresh model with the same weights gives at an input size it has already
run; size-only caches stay within their byte bound and never hold inference tensors.

The weight changes: mmengine's ExponentialMovingAverage (EMAHook) and mmdet's MeanTeacherHook, which write through
`p.data` (neither the version counter nor the storage changes), `load_state_dict`, an optimizer step, `.to(dtype)`;
and a training step at a size first seen under `torch.inference_mode()`, by the same and by a fresh instance.
"""
import copy

import pytest
import torch
import torch.nn as nn

from vitpe_mm.layers import PE_TYPES, SIZE_CACHE
from vitpe_mm.layers._cache import tensor_bytes
from vitpe_mm.models.cpvt import CPVTv2
from vitpe_mm.models.swin import SwinRPB
from vitpe_mm.models.vit import ViTPE

from conftest import perturb

BACKBONES = ('vit', 'vitdet', 'cpvt', 'swin')
COMPOSED = (('rel_bias', 'abs'), ('abs', 'rope_mixed'), ('peg', 'rel_bias'))
CASES = [(b, p) for b in BACKBONES for p in PE_TYPES + COMPOSED]
SIZE = (72, 104)  # not the pre-training size (128): the absolute / global bias tables are resampled or cropped


def _build(backbone: str, pe_type, seed: int = 0) -> nn.Module:
    """A tiny backbone with every parameter perturbed (so that a stale table shows in the outputs)."""
    pe = list(pe_type) if isinstance(pe_type, tuple) else pe_type
    if backbone in ('vit', 'vitdet'):
        windowed = dict(with_cls_token=False, window_size=3, global_attn_indexes=(1,)) if backbone == 'vitdet' else {}
        model = ViTPE(dict(embed_dims=32, num_layers=2, num_heads=2), img_size=128, pe_type=pe, **windowed)
    elif backbone == 'cpvt':
        model = CPVTv2(arch=dict(embed_dims=(16, 32, 40, 64), num_heads=(1, 2, 5, 8), mlp_ratios=(2, 2, 2, 2),
                                 depths=(1, 1, 1, 1)), img_size=128, pe_type=pe)
    else:
        model = SwinRPB(arch=dict(embed_dims=16, depths=(2, 2, 2, 2), num_heads=(1, 2, 2, 4)), pretrain_img_size=128,
                        pe_type=pe, drop_path_rate=0.0)
    return perturb(model, seed=seed, std=0.05).eval()


def _fresh(backbone: str, pe_type, like: nn.Module) -> nn.Module:
    fresh = _build(backbone, pe_type, seed=123)
    fresh.load_state_dict(like.state_dict())
    param = next(like.parameters())
    return fresh.to(param.dtype).train(like.training)


def _run(model: nn.Module, x: torch.Tensor):
    with torch.no_grad():
        return model(x)


def _assert_same(outs, expected, atol=1e-6):
    assert len(outs) == len(expected)
    for o, e in zip(outs, expected):
        torch.testing.assert_close(o, e, atol=atol, rtol=0)


def _change_weights(model: nn.Module, seed: int) -> None:
    """What a training step does to every parameter, the PE ones included (in place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.1)


def _x(dtype=torch.float32) -> torch.Tensor:
    return torch.randn(1, 3, *SIZE, generator=torch.Generator().manual_seed(7)).to(dtype)


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_mmengine_ema_writes_through_data_are_seen(backbone, pe_type):
    from mmengine.model import ExponentialMovingAverage
    model = _build(backbone, pe_type)
    ema = ExponentialMovingAverage(model, momentum=0.5)
    ema.update_parameters(model)  # first update: p.data.copy_
    x = _x()
    before = _run(ema.module.eval(), x)  # the size has been seen
    _change_weights(model, seed=1)
    ema.update_parameters(model)  # lerp through .data
    after = _run(ema.module, x)
    _assert_same(after, _run(_fresh(backbone, pe_type, ema.module), x))
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before))


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_mmdet_mean_teacher_update_is_seen(backbone, pe_type):
    pytest.importorskip('mmcv.ops', reason='mmdet hooks import mmcv.ops (built by tools/setup_env.sh)')
    from mmdet.engine.hooks import MeanTeacherHook
    student = _build(backbone, pe_type)
    teacher = _build(backbone, pe_type, seed=5)
    pair = nn.Module()
    pair.student, pair.teacher = student, teacher
    x = _x()
    before = _run(teacher, x)
    _change_weights(student, seed=2)
    MeanTeacherHook(momentum=0.5).momentum_update(pair, 0.5)  # dst.data.mul_(1 - m).add_(src.data, alpha=m)
    after = _run(teacher, x)
    _assert_same(after, _run(_fresh(backbone, pe_type, teacher), x))
    assert any(not torch.allclose(a, b, atol=1e-4) for a, b in zip(after, before))


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_load_state_dict_is_seen(backbone, pe_type):
    model = _build(backbone, pe_type)
    x = _x()
    _run(model, x)
    other = _build(backbone, pe_type, seed=9)
    model.load_state_dict(other.state_dict())
    _assert_same(_run(model, x), _run(other, x))


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_optimizer_step_is_seen(backbone, pe_type):
    model = _build(backbone, pe_type)
    x = _x()
    _run(model, x)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    sum(o.square().mean() for o in model(x)).backward()
    optimizer.step()
    model.eval()
    _assert_same(_run(model, x), _run(_fresh(backbone, pe_type, model), x))


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_to_dtype_is_seen(backbone, pe_type):
    model = _build(backbone, pe_type)
    _run(model, _x())
    model.to(torch.float64)
    x = _x(torch.float64)
    outs = _run(model, x)
    assert all(o.dtype == torch.float64 for o in outs)
    _assert_same(outs, _run(_fresh(backbone, pe_type, model), x), atol=1e-10)


def _train_step(model: nn.Module, x: torch.Tensor):
    model.train()
    model.zero_grad(set_to_none=True)
    outs = model(x)
    sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs).backward()
    return [o.detach() for o in outs], {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize('backbone, pe_type', CASES)
def test_training_at_a_size_first_seen_under_inference_mode(backbone, pe_type):
    model = _build(backbone, pe_type)
    x = _x()
    SIZE_CACHE.clear()  # the size is first seen here, under inference mode
    with torch.inference_mode():
        model(x)
    other = _fresh(backbone, pe_type, model)  # another instance: the caches are shared across instances
    outs, grads = _train_step(model, x)  # "Inference tensors cannot be saved for backward" before the fix
    other_outs, other_grads = _train_step(other, x)
    _assert_same(outs, other_outs)
    assert grads.keys() == other_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], other_grads[name], atol=1e-6, rtol=1e-5, msg=name)


def _hidden_tensor_bytes(model: nn.Module) -> int:
    """Bytes of tensors that modules (and the PE object) hold outside their parameters and buffers: per-size
    caches would show here."""
    total = 0
    holders = list(model.modules()) + [getattr(model, 'pos_encoding', None)]
    for holder in holders:
        for name, value in vars(holder).items():
            if name not in ('_parameters', '_buffers', '_modules'):
                total += tensor_bytes(value)
    return total


@pytest.mark.parametrize('backbone, pe_type', [('swin', 'rel_bias'), ('cpvt', 'rel_bias'), ('vit', 'rel_bias'),
                                               ('vitdet', 'rope_axial'), ('vit', 'sincos'), ('swin', 'rope_axial')])
def test_size_caches_stay_within_their_byte_bound_over_200_sizes(backbone, pe_type, monkeypatch):
    model = _build(backbone, pe_type)
    bound = 256 * 1024
    monkeypatch.setattr(SIZE_CACHE, 'max_bytes', bound)
    SIZE_CACHE.clear()
    sizes = [(32 + i // 10 * 3, 32 + i % 10 * 5) for i in range(200)]
    assert len(set(sizes)) == 200
    hidden = None
    seen = 0
    with torch.no_grad():
        for size in sizes:
            model(torch.randn(1, 3, *size))
            assert SIZE_CACHE.nbytes <= bound
            seen = max(seen, len(SIZE_CACHE))
            hidden = _hidden_tensor_bytes(model) if hidden is None else hidden
            assert _hidden_tensor_bytes(model) == hidden  # nothing per size kept in the modules
    assert SIZE_CACHE.nbytes > 0  # the cache is used ...
    assert len(SIZE_CACHE) < 200  # ... and evicts: 200 sizes do not fit in the bound
    SIZE_CACHE.clear()


def test_size_cache_holds_no_inference_tensors():
    model = _build('swin', 'rel_bias')
    SIZE_CACHE.clear()
    with torch.inference_mode():
        model(_x())
    values = list(SIZE_CACHE._entries.values())
    assert values

    def tensors(value):
        if isinstance(value, torch.Tensor):
            yield value
        elif isinstance(value, (tuple, list)):
            for v in value:
                yield from tensors(v)
    assert all(not t.is_inference() for v in values for t in tensors(v))


def test_deepcopy_keeps_one_encoding_object():
    """copy.deepcopy (what EMA hooks do) keeps the PE object's modules those of the copy."""
    model = _build('swin', ('rel_bias', 'abs'))
    clone = copy.deepcopy(model)
    assert clone.pos_encoding.parts[0] is clone.rel_pos_bias and clone.pos_encoding.parts[1] is clone.pos_embed
    assert clone.rel_pos_bias is not model.rel_pos_bias

"""vitpe_mm/engine/cpu_sync_bn.py: SyncBatchNorm over gloo on CPU equals BatchNorm over the concatenated batch.

The 2-process tests start real processes (torch.multiprocessing, gloo on a free port) and compare every rank's
outputs, input gradients, summed weight gradients and running statistics with one BatchNorm on the whole batch
(float64, so the comparison is to 1e-10).
"""
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmcv.cnn import build_norm_layer
from mmengine.config import Config
from torch import nn

from vitpe_mm.engine.cpu_sync_bn import CPUSyncBatchNorm, use_cpu_sync_bn

WORLD = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _compare_with_batch_norm(rank: int, per_rank: int, shape: tuple, momentum) -> None:
    torch.manual_seed(0)  # the same full batch and weights on every rank
    x = torch.randn(per_rank * WORLD, *shape, dtype=torch.float64)
    grad_out = torch.randn_like(x)
    ref = nn.BatchNorm2d(shape[0], momentum=momentum).double() if len(shape) == 3 else \
        nn.BatchNorm1d(shape[0], momentum=momentum).double()
    nn.init.uniform_(ref.weight)
    nn.init.uniform_(ref.bias)
    bn = CPUSyncBatchNorm(shape[0], momentum=momentum).double()
    bn.load_state_dict(ref.state_dict())
    for _ in range(2):  # twice: running statistics after two updates
        ref.weight.grad = bn.weight.grad = None
        x_ref = x.clone().requires_grad_()
        ref(x_ref).backward(grad_out)
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        x_part = x[part].clone().requires_grad_()
        out = bn(x_part)
        out.backward(grad_out[part])
        with torch.no_grad():
            expected = nn.functional.batch_norm(x, None, None, ref.weight, ref.bias, True, 0.0, ref.eps)[part]
        torch.testing.assert_close(out.detach(), expected, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(x_part.grad, x_ref.grad[part], rtol=1e-10, atol=1e-10)
        weight_grad, bias_grad = bn.weight.grad.clone(), bn.bias.grad.clone()
        dist.all_reduce(weight_grad)
        dist.all_reduce(bias_grad)
        torch.testing.assert_close(weight_grad, ref.weight.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(bias_grad, ref.bias.grad, rtol=1e-10, atol=1e-10)
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(bn.state_dict()[key], value, rtol=1e-10, atol=1e-10, msg=key)


def _ddp_training(rank: int) -> None:
    """DDP accepts a CPU model holding CPUSyncBatchNorm; 3 SGD steps on 1 image per rank equal 3 steps of the BN
    model on both images, and the ranks end with the same weights and statistics."""
    torch.manual_seed(0)
    make = lambda norm: nn.Sequential(nn.Conv2d(3, 4, 3), norm(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),  # noqa: E731
                                      norm(4), nn.Flatten(), nn.Linear(4, 2)).double()
    ref = make(nn.BatchNorm2d)
    model = make(CPUSyncBatchNorm)
    model.load_state_dict(ref.state_dict())
    ddp = nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
    opt, ref_opt = torch.optim.SGD(ddp.parameters(), lr=0.1), torch.optim.SGD(ref.parameters(), lr=0.1)
    for step in range(3):
        x = torch.randn(WORLD, 3, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(step))
        loss = ddp(x[rank:rank + 1]).square().mean()  # the 1x1 pooled map: 1 value per channel per rank
        opt.zero_grad()
        loss.backward()
        opt.step()
        ref_loss = ref(x).square().mean()
        ref_opt.zero_grad()
        ref_loss.backward()
        ref_opt.step()
    for key, value in ref.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-9, atol=1e-9, msg=key)
    gathered = [None] * WORLD
    dist.all_gather_object(gathered, model.state_dict())
    for key, value in gathered[0].items():
        assert torch.equal(gathered[1][key], value), key


def _one_value_per_channel_is_refused(rank: int) -> None:
    bn = CPUSyncBatchNorm(3)
    x = torch.randn(1, 3, 1, 1) if rank == 0 else torch.randn(0, 3, 1, 1)
    with pytest.raises(ValueError, match='more than 1 value per channel'):
        bn(x)


def _worker(rank: int, port: int, name: str, args: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=WORLD)
    try:
        globals()[name](rank, *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def run_in_two_processes(name: str, *args) -> None:
    mp.start_processes(_worker, args=(free_port(), name, args), nprocs=WORLD, join=True, start_method='fork')


@pytest.mark.distributed
@pytest.mark.parametrize('per_rank,shape,momentum', [(2, (3, 5, 4), 0.1), (1, (4, 7), None), (3, (2, 1, 1), 0.3)],
                         ids=['4d', '3d-cumulative', '1x1'])
def test_two_processes_equal_batch_norm_on_the_whole_batch(per_rank, shape, momentum):
    run_in_two_processes('_compare_with_batch_norm', per_rank, shape, momentum)


@pytest.mark.distributed
def test_ddp_training_equals_one_process_with_the_whole_batch():
    run_in_two_processes('_ddp_training')


@pytest.mark.distributed
def test_one_value_per_channel_over_all_processes_is_refused():
    run_in_two_processes('_one_value_per_channel_is_refused')


def test_without_process_group_it_is_batch_norm():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 5, 5)
    ref, bn = nn.BatchNorm2d(3), CPUSyncBatchNorm(3)
    torch.testing.assert_close(bn(x), ref(x))
    torch.testing.assert_close(bn.running_var, ref.running_var)
    bn.eval(), ref.eval()
    torch.testing.assert_close(bn(x), ref(x))
    assert bn.state_dict().keys() == nn.SyncBatchNorm(3).state_dict().keys()


def test_built_from_config_as_bn():
    name, layer = build_norm_layer(dict(type='CPUSyncBN', requires_grad=True), 8)
    assert name == 'bn' and isinstance(layer, CPUSyncBatchNorm) and layer.num_features == 8


def test_use_cpu_sync_bn():
    def config():
        return Config(dict(model=dict(decode_head=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
                                      auxiliary_head=[dict(norm_cfg=dict(type='MMSyncBN'))],
                                      neck=dict(norm_cfg=dict(type='GN', num_groups=4)))))

    cfg = config()
    assert use_cpu_sync_bn(cfg, 'pytorch', cuda=False) == 2
    assert cfg.model.decode_head.norm_cfg.type == 'CPUSyncBN' and cfg.model.neck.norm_cfg.type == 'GN'
    assert cfg.model.auxiliary_head[0].norm_cfg.type == 'CPUSyncBN'
    for launcher, cuda in (('none', False), ('pytorch', True), ('slurm', True)):
        cfg = config()
        assert use_cpu_sync_bn(cfg, launcher, cuda=cuda) == 0 and cfg.model.decode_head.norm_cfg.type == 'SyncBN'

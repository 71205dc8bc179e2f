"""SyncBatchNorm that also trains on CPU (gloo), so that a multi-process run without GPUs normalises with the
statistics of the whole batch across processes, as SyncBN does on GPUs.

torch's `nn.SyncBatchNorm` refuses to train on CPU in a process group ("SyncBatchNorm expected input tensor to be on
GPU"). Turning it into per-process BN changes the model: a batch of 1 per process fails in the 1x1 pooled branch of
UperNet's PPM ("Expected more than 1 value per channel"), the running statistics drift apart between processes (rank
1 then evaluates its half of the validation split with other statistics than the checkpoint holds), and the losses
differ from a one-process run with the total batch. `CPUSyncBatchNorm` (norm type 'CPUSyncBN') has the parameters,
buffers and state-dict keys of `nn.SyncBatchNorm`; training in a process group it takes the batch mean and variance
over all processes with two differentiable all-reduces (sum and count, then sum of squared deviations), so its
outputs and gradients are those of BN over the concatenated batch. In eval mode, or alone, it is BatchNorm.
`use_cpu_sync_bn(cfg, launcher)` switches a config's SyncBN norm layers to it for a distributed run without CUDA.
"""
import logging
from typing import Any, Optional

import torch
import torch.distributed as dist
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.registry import MODELS
from torch.nn.modules.batchnorm import _BatchNorm

from .runner import replace_sync_bn

__all__ = ['CPUSyncBatchNorm', 'use_cpu_sync_bn']


class _AllReduceSum(torch.autograd.Function):
    """Sum over the processes; the gradient of every process's input is the sum of all output gradients."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, group) -> torch.Tensor:
        ctx.group = group
        tensor = tensor.clone()
        dist.all_reduce(tensor, group=group)
        return tensor

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        grad = grad_output.clone()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def differentiable_all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    """`dist.all_reduce` (sum) that autograd differentiates (torch.distributed.nn's version is deprecated)."""
    return _AllReduceSum.apply(tensor, group)


@MODELS.register_module('CPUSyncBN')
class CPUSyncBatchNorm(_BatchNorm):
    """Batch normalisation over the batches of all processes of a (gloo) process group, on CPU tensors.

    Arguments, parameters, buffers and state-dict keys are those of `nn.SyncBatchNorm`. It is no subclass of it:
    DDP refuses CPU modules that hold `nn.SyncBatchNorm` layers. Outside a process group of several processes, and
    in eval mode, it is plain BatchNorm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group: Optional[Any] = None, device=None,
                 dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f'expected at least 2D input (got {input.dim()}D input)')

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group or (dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        if not self.training or group is None or dist.get_world_size(group) == 1:
            return super().forward(input)
        self._check_input_dim(input)
        channels = input.shape[1]
        dims = [0] + list(range(2, input.dim()))
        shape = (1, channels) + (1,) * (input.dim() - 2)

        # sum over every process's batch, and the number of values per channel (no gradient)
        count = torch.full((1,), input.numel() // channels, dtype=input.dtype)
        totals = differentiable_all_reduce(torch.cat([input.sum(dims), count]), group=group)
        num = totals[-1].detach()
        if num.item() <= 1:
            raise ValueError(f'Expected more than 1 value per channel when training, got input size '
                             f'{tuple(input.shape)} in a process group of {dist.get_world_size(group)}')
        mean = totals[:channels] / num  # C
        centered = input - mean.view(shape)
        var = differentiable_all_reduce(centered.square().sum(dims), group=group) / num  # C, biased
        out = centered * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)

        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            with torch.no_grad():  # running_var holds the unbiased variance, as BatchNorm's
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * (num / (num - 1)), alpha=factor)
        return out


def use_cpu_sync_bn(cfg: Config, launcher: str, cuda: Optional[bool] = None) -> int:
    """For a distributed run (`launcher` other than 'none') on a machine without CUDA, turns the model's SyncBN /
    MMSyncBN norm_cfgs into CPUSyncBN (in place) and logs it. Returns how many were changed."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if cuda or launcher == 'none':
        return 0
    count = replace_sync_bn(cfg.get('model'), new_type='CPUSyncBN')
    if count:
        print_log(f'no CUDA device: {count} SyncBN norm_cfg(s) -> CPUSyncBN (batch statistics synchronised over '
                  'the processes with gloo, as SyncBN on GPUs)', logger='current', level=logging.WARNING)
    return count

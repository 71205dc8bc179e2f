"""Ending a distributed run cleanly.

mmengine starts the process group (or `init_distributed` does, on CPU) and never destroys it. A gloo group left to
the interpreter's exit makes a process abort now and then ("terminate called without an active exception", exit
status -6, pytorch/pytorch#190489), so a job whose training and evaluation succeeded can still fail under torchrun.
"""
import torch.distributed as dist

__all__ = ['destroy_process_group']


def destroy_process_group() -> None:
    """After a successful run: waits for every rank, then destroys the default process group. No-op without one.

    Call it only when the run succeeded: after an error the other ranks may be inside a collective and the
    barrier would wait for them until the group's timeout.
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

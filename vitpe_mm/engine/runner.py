"""Building an mmengine Runner for an mmdet or mmseg config on the machine at hand.

Shared by tools/train.py, tools/test.py and tools/demo.py: the toolbox is chosen from the config
(`default_scope`, else the model type), the inputs are checked before anything is built (data layout, pretrained
files, test checkpoint), the config is fitted to the machine (gloo instead of NCCL without a GPU, CPU-friendly DDP,
SyncBN -> BN for multi-process CPU runs, no AMP on CPU), and the runner is a `SafeLoadRunner`, whose checkpoint reads
(resume, `load_from`) accept mmengine's own checkpoints under `torch.load(weights_only=True)`
(see vitpe_mm/engine/safe_load.py).
"""
import datetime
import importlib
import logging
import os
import pickle
import subprocess
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.config import Config, ConfigDict
from mmengine.logging import print_log
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from ..checkpoint.sources import is_remote
from .hooks import IterationSeedHook, use_safe_checkpoint_hook, use_safe_logger_hook
from .safe_load import mmengine_checkpoint_globals

__all__ = ['TOOLBOXES', 'LAUNCHERS', 'SafeLoadRunner', 'build_runner', 'check_inputs', 'check_pretrained_files',
           'add_iteration_seed_hook', 'detect_toolbox', 'fit_to_machine', 'init_distributed', 'load_config',
           'register_toolbox', 'replace_sync_bn']

TOOLBOXES = ('mmdet', 'mmseg')
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')
SYNC_BN_TYPES = ('SyncBN', 'MMSyncBN')
# Model types mmseg registers at the top level; everything else a config builds is looked up in the registries.
_MMSEG_SEGMENTORS = ('EncoderDecoder', 'CascadeEncoderDecoder', 'SegTTAModel', 'DepthEstimator')


def _log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


# ----------------------------------------------------------------------------------------------------------------
# Which toolbox
# ----------------------------------------------------------------------------------------------------------------
def register_toolbox(toolbox: str) -> None:
    """Imports `toolbox` (mmdet or mmseg) and registers all its modules (`register_all_modules`)."""
    if toolbox not in TOOLBOXES:
        raise ValueError(f'toolbox must be one of {TOOLBOXES}, got {toolbox!r}')
    importlib.import_module(f'{toolbox}.utils').register_all_modules(init_default_scope=False)


def _model_types(toolbox: str) -> Sequence[str]:
    register_toolbox(toolbox)
    return tuple(importlib.import_module(f'{toolbox}.registry').MODELS.module_dict)


def detect_toolbox(cfg: Config) -> str:
    """'mmdet' or 'mmseg' for a config: its `default_scope`, else the toolbox that registers `model.type`."""
    scope = cfg.get('default_scope')
    if scope in TOOLBOXES:
        return scope
    if scope is not None:
        raise ValueError(f'default_scope={scope!r} in the config: tools/train.py and tools/test.py run '
                         f'{" and ".join(TOOLBOXES)} configs only (default_scope "mmdet" or "mmseg")')
    model = cfg.get('model')
    model_type = model.get('type') if isinstance(model, dict) else None
    if isinstance(model_type, type):  # new-style (lazy import) configs hold the class itself
        module = model_type.__module__.split('.')[0]
        if module in TOOLBOXES:
            return module
        model_type = model_type.__name__
    if not isinstance(model_type, str):
        raise ValueError('cannot tell whether the config is for mmdet or mmseg: it sets no default_scope and no '
                         'model.type; add default_scope = "mmdet" or "mmseg" to it')
    if model_type in _MMSEG_SEGMENTORS:
        return 'mmseg'
    found = [tb for tb in TOOLBOXES if model_type in _model_types(tb)]
    if len(found) != 1:
        raise ValueError(f'cannot tell whether the config is for mmdet or mmseg from model.type={model_type!r} '
                         f'(registered by: {found or "neither"}); add default_scope = "mmdet" or "mmseg" to it')
    return found[0]


def load_config(path: str, cfg_options: Optional[dict] = None, work_dir: Optional[str] = None,
                launcher: str = 'none') -> Config:
    """Reads a config as mmdet's / mmseg's tools do, and readies its toolbox.

    `--cfg-options` are merged, the work dir is `work_dir` > the config's `work_dir` > work_dirs/<config name>,
    the toolbox (mmdet / mmseg) is registered and written to `default_scope` when the config has none.
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    if not os.path.isfile(path):
        raise FileNotFoundError(f'config file not found: {path}')
    cfg = Config.fromfile(path)
    cfg.launcher = launcher
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = os.path.join('./work_dirs', os.path.splitext(os.path.basename(path))[0])
    toolbox = detect_toolbox(cfg)
    register_toolbox(toolbox)
    if cfg.get('default_scope') is None:
        cfg.default_scope = toolbox
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# Checks before building
# ----------------------------------------------------------------------------------------------------------------
def _has_scheme(path: str) -> bool:
    """URLs and mmengine prefixes ('https://', 'torchvision://', 'open-mmlab://', 's3://', ...)."""
    return '://' in path


def _pretrained_entries(node: Any, where: str) -> List[Tuple[str, str, dict]]:
    """(config key, checkpoint path, owning module cfg) of every init_cfg=dict(type='Pretrained', checkpoint=...)
    under `node`."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'init_cfg':
                for init in (value if isinstance(value, (list, tuple)) else [value]):
                    if isinstance(init, dict) and init.get('type') == 'Pretrained' and init.get('checkpoint'):
                        found.append((f'{where}.init_cfg', str(init['checkpoint']), node))
            else:
                found += _pretrained_entries(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            found += _pretrained_entries(value, f'{where}[{i}]')
    return found


def check_pretrained_files(cfg: Config) -> None:
    """Raises FileNotFoundError for a local `Pretrained` checkpoint of the model that is not on disk."""
    for key, path, owner in _pretrained_entries(cfg.get('model'), 'model'):
        if _has_scheme(path) or is_remote(path) or os.path.isfile(os.path.expanduser(path)):
            continue  # URLs and hub ids are fetched (or found in their cache) when the weights are loaded
        model = owner.get('type') if isinstance(owner.get('type'), str) else 'CPVTv2|SwinRPB|ViTPE'
        arch = owner.get('arch') if isinstance(owner.get('arch'), str) else '...'
        raise FileNotFoundError(
            f'pretrained checkpoint not found: {path} (from {key} in the config).\n'
            f'Make it from the official / timm release: `python tools/convert_checkpoint.py SRC {path} '
            f'--model {model} --arch {arch}` (SRC: the ImageNet checkpoint named in the config header), or train '
            f'from scratch with `--cfg-options {key}=None`.')


def check_inputs(cfg: Config, mode: str, checkpoint: Optional[str] = None) -> None:
    """Checks, before any model is built, what a run reads from disk.

    Args:
        cfg: the merged config.
        mode: 'train' (training data, plus validation data when a val loop is configured, and pretrained
            checkpoints) or 'test' (test data and `checkpoint`).
        checkpoint: the checkpoint tools/test.py evaluates.
    """
    if mode not in ('train', 'test'):
        raise ValueError(f"mode must be 'train' or 'test', got {mode!r}")
    if mode == 'train':
        splits = ('train_dataloader',) + (('val_dataloader',) if cfg.get('val_cfg') else ())
    else:
        splits = ('test_dataloader',)
    try:
        from vitpe_mm.datasets.checks import check_data_layout
    except ImportError:  # the checks module is optional for this helper
        check_data_layout = None
    if check_data_layout is not None:
        check_data_layout(cfg, splits=splits)
    if mode == 'train':
        check_pretrained_files(cfg)
    elif checkpoint is not None and not _has_scheme(checkpoint) and not os.path.isfile(checkpoint):
        raise FileNotFoundError(f'checkpoint to test not found: {checkpoint} (a file written by tools/train.py, '
                                'e.g. work_dirs/<config>/iter_N.pth or epoch_N.pth)')


def add_iteration_seed_hook(cfg: Config) -> None:
    """Adds `IterationSeedHook` to `custom_hooks` (unless there) so that `--resume` continues the run exactly."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(h.get('type') in ('IterationSeedHook', IterationSeedHook) for h in hooks):
        hooks.append(dict(type='IterationSeedHook'))
    cfg.custom_hooks = hooks


# ----------------------------------------------------------------------------------------------------------------
# Fitting the config to the machine
# ----------------------------------------------------------------------------------------------------------------
def replace_sync_bn(node: Any, new_type: str = 'BN') -> int:
    """Replaces norm_cfg types SyncBN / MMSyncBN by `new_type` in a (model) config, in place. Returns how many."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') in SYNC_BN_TYPES:
            node['type'] = new_type
            count += 1
        for value in node.values():
            count += replace_sync_bn(value, new_type)
    elif isinstance(node, (list, tuple)):
        for value in node:
            count += replace_sync_bn(value, new_type)
    return count


def fit_to_machine(cfg: Config, launcher: str, cuda: Optional[bool] = None) -> List[str]:
    """Adapts `cfg` (in place) to a machine with or without CUDA; returns the notes it logged.

    Without CUDA: `env_cfg.dist_cfg.backend` 'nccl' becomes 'gloo'; an AmpOptimWrapper is refused (mmengine's AMP
    wrapper runs on GPUs only); in a distributed run SyncBN layers become BN (torch's SyncBatchNorm trains on GPUs
    only; non-distributed runs are handled by mmengine, which reverts SyncBN to BN when it wraps the model) and DDP
    gets `device_ids=None` (CPU modules).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'launcher must be one of {LAUNCHERS}, got {launcher!r}')
    cuda = torch.cuda.is_available() if cuda is None else cuda
    notes = []
    env_cfg = cfg.get('env_cfg') or ConfigDict()
    dist_cfg = env_cfg.get('dist_cfg') or ConfigDict()
    backend = dist_cfg.get('backend', 'nccl')
    if not cuda and backend == 'nccl':
        dist_cfg['backend'] = 'gloo'
        notes.append("no CUDA device: env_cfg.dist_cfg.backend 'nccl' -> 'gloo'")
    elif cuda and backend == 'gloo' and launcher != 'none':
        notes.append("env_cfg.dist_cfg.backend is 'gloo' on a CUDA machine: 'nccl' is much faster for GPUs")
    env_cfg['dist_cfg'] = dist_cfg
    cfg['env_cfg'] = env_cfg
    if not cuda:
        optim_type = (cfg.get('optim_wrapper') or {}).get('type')
        if optim_type == 'AmpOptimWrapper':
            raise ValueError('mixed precision (--amp / AmpOptimWrapper) needs a CUDA GPU and none is available; '
                             "run without --amp (or set optim_wrapper.type='OptimWrapper')")
    if not cuda and launcher != 'none':
        replaced = replace_sync_bn(cfg.get('model'))
        if replaced:
            notes.append(f'no CUDA device: {replaced} SyncBN norm_cfg(s) -> BN (SyncBatchNorm trains on GPUs only; '
                         'batch statistics are now per process)')
        wrapper = cfg.get('model_wrapper_cfg') or ConfigDict(
            type='MMDistributedDataParallel', broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
        if wrapper.get('device_ids', None) is not None:
            notes.append(f'no CUDA device: model_wrapper_cfg.device_ids {wrapper["device_ids"]} -> None')
        wrapper['device_ids'] = None  # DDP of a CPU module
        cfg['model_wrapper_cfg'] = wrapper
    for note in notes:
        _log(note, logging.WARNING)
    return notes


def _set_env_from_slurm() -> None:
    """RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT from SLURM_* (as mmengine's slurm launcher)."""
    node_list = os.environ['SLURM_NODELIST']
    addr = subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ.setdefault('MASTER_ADDR', addr)
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _set_env_from_mpi() -> None:
    if 'MASTER_ADDR' not in os.environ:
        raise KeyError('the environment variable MASTER_ADDR is not set (needed by --launcher mpi)')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']


def init_distributed(cfg: Config, launcher: str, cuda: Optional[bool] = None) -> None:
    """Starts the process group on a machine without CUDA (mmengine's own init_dist calls
    `torch.cuda.set_device` and fails there); with CUDA mmengine's Runner does it. No-op for launcher 'none'."""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if launcher == 'none' or cuda or torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        _set_env_from_slurm()
    elif launcher == 'mpi':
        _set_env_from_mpi()
    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'gloo')
    timeout = dist_cfg.pop('timeout', None)
    kwargs = dict(timeout=datetime.timedelta(seconds=timeout)) if timeout is not None else {}
    torch_dist.init_process_group(backend=backend, **kwargs)
    _log(f'process group started on CPU: backend {backend}, rank {torch_dist.get_rank()} of '
         f'{torch_dist.get_world_size()}')


# ----------------------------------------------------------------------------------------------------------------
# The runner
# ----------------------------------------------------------------------------------------------------------------
def _safe_load_error(filename: str, err: Exception) -> pickle.UnpicklingError:
    return pickle.UnpicklingError(
        f'{filename} holds Python objects outside what an mmengine training checkpoint holds (tensors, numpy arrays '
        'and scalars, HistoryBuffer), so it is not unpickled. Weights from elsewhere go through '
        "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=...) (converted with "
        f'tools/convert_checkpoint.py), or re-save their state_dict with torch.save.\n{err}')


@RUNNERS.register_module()
class SafeLoadRunner(Runner):
    """mmengine's Runner whose checkpoint reads (`resume`, `load_from`) accept mmengine checkpoints under
    `torch.load(weights_only=True)`: the few types they hold are allowed while the file is read, nothing else."""

    def load_checkpoint(self, filename: str, map_location: Any = 'cpu', strict: bool = False,
                        revise_keys: list = [(r'^module.', '')]):  # noqa: B006 - mmengine's signature
        return _wrap_load_checkpoint(super().load_checkpoint)(filename, map_location=map_location, strict=strict,
                                                              revise_keys=revise_keys)


def _wrap_load_checkpoint(load: Callable) -> Callable:
    def load_checkpoint(filename, *args, **kwargs):
        with mmengine_checkpoint_globals():
            try:
                return load(filename, *args, **kwargs)
            except pickle.UnpicklingError as err:
                raise _safe_load_error(filename, err) from err
    return load_checkpoint


def static_compile_options(compile_cfg):
    """`cfg.compile` with `dynamic=False` unless the config chose: one static graph per input size.

    With symbolic sizes, torch 2.13's inductor fails on the strides of the pyramids' token maps (CPVT, Swin:
    "cannot determine truth value of Relational", "Invalid ranges"); static graphs compile and match eager
    (tests/models/test_compile.py). `None` / `False` (no compile) pass through unchanged.
    """
    if compile_cfg is None or compile_cfg is False:
        return compile_cfg
    if compile_cfg is True:
        return dict(dynamic=False)
    if not isinstance(compile_cfg, dict):
        raise TypeError(f'cfg.compile must be a bool or a dict of torch.compile options, got {compile_cfg!r}')
    return compile_cfg if 'dynamic' in compile_cfg else dict(compile_cfg, dynamic=False)


def build_runner(cfg: Config) -> Runner:
    """The runner for a config readied by `load_config` / `fit_to_machine`.

    Starts the process group on CPU for a distributed `cfg.launcher` (`init_distributed`), limits torch.compile's
    recompilations as mmdet's tools do, compiles with static shapes unless `cfg.compile` says otherwise
    (`static_compile_options`), puts our hooks in place of mmengine's `CheckpointHook` (atomic checkpoints,
    `SafeCheckpointHook`) and `LoggerHook` (results files written by the main process only, `SafeLoggerHook`),
    and builds `SafeLoadRunner.from_cfg(cfg)`, or the config's `runner_type` from the
    registry (its `load_checkpoint` then gets the same allowlist).
    """
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.utils import setup_cache_size_limit_of_dynamo
        setup_cache_size_limit_of_dynamo()
    init_distributed(cfg, cfg.get('launcher', 'none'))
    if cfg.get('compile'):
        cfg.compile = static_compile_options(cfg.compile)
    use_safe_checkpoint_hook(cfg)
    use_safe_logger_hook(cfg)
    if 'runner_type' not in cfg:
        return SafeLoadRunner.from_cfg(cfg)
    runner = RUNNERS.build(cfg)
    if not isinstance(runner, SafeLoadRunner) and hasattr(runner, 'load_checkpoint'):
        runner.load_checkpoint = _wrap_load_checkpoint(runner.load_checkpoint)
    return runner

"""Running mmdet / mmseg configs: runner construction fitted to the machine, safe reads of mmengine checkpoints,
and a seed hook that makes resumed runs exact.

Used by tools/train.py, tools/test.py and tools/demo.py.
"""
from .hooks import IterationSeedHook, iteration_seed
from .runner import (LAUNCHERS, TOOLBOXES, SafeLoadRunner, add_iteration_seed_hook, build_runner, check_inputs,
                     check_pretrained_files, detect_toolbox, fit_to_machine, init_distributed, load_config,
                     register_toolbox, replace_sync_bn)
from .safe_load import HISTORY_BUFFER_STATISTICS, mmengine_checkpoint_globals, mmengine_checkpoint_safe_globals

__all__ = ['IterationSeedHook', 'iteration_seed', 'LAUNCHERS', 'TOOLBOXES', 'SafeLoadRunner',
           'add_iteration_seed_hook', 'build_runner', 'check_inputs', 'check_pretrained_files', 'detect_toolbox',
           'fit_to_machine', 'init_distributed', 'load_config', 'register_toolbox', 'replace_sync_bn',
           'HISTORY_BUFFER_STATISTICS', 'mmengine_checkpoint_globals', 'mmengine_checkpoint_safe_globals']

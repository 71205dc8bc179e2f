"""Running mmdet / mmseg configs: runner construction fitted to the machine, safe reads of mmengine checkpoints,
the train / test command lines (`cli`) and the mmengine hooks (`hooks`: exact resume, atomic checkpoints, checkpoint
checks, progress lines).

Used by tools/train.py, tools/test.py, tools/demo.py and the analysis tools.
"""
from .hooks import (
    CheckpointMatchHook,
    CheckpointMismatchError,
    IterationSeedHook,
    ProgressHook,
    SafeCheckpointHook,
    SafeLoggerHook,
    iteration_seed,
    use_safe_checkpoint_hook,
    use_safe_logger_hook,
)
from .runner import (
    LAUNCHERS,
    TOOLBOXES,
    SafeLoadRunner,
    add_iteration_seed_hook,
    build_runner,
    check_inputs,
    check_pretrained_files,
    detect_toolbox,
    fit_to_machine,
    init_distributed,
    load_config,
    register_toolbox,
    replace_sync_bn,
)
from .safe_load import HISTORY_BUFFER_STATISTICS, mmengine_checkpoint_globals, mmengine_checkpoint_safe_globals

__all__ = ['CheckpointMatchHook', 'CheckpointMismatchError', 'IterationSeedHook', 'ProgressHook', 'SafeCheckpointHook',
           'SafeLoggerHook', 'iteration_seed', 'use_safe_checkpoint_hook', 'use_safe_logger_hook', 'LAUNCHERS',
           'TOOLBOXES', 'SafeLoadRunner', 'add_iteration_seed_hook', 'build_runner', 'check_inputs',
           'check_pretrained_files', 'detect_toolbox', 'fit_to_machine', 'init_distributed', 'load_config',
           'register_toolbox', 'replace_sync_bn', 'HISTORY_BUFFER_STATISTICS', 'mmengine_checkpoint_globals',
           'mmengine_checkpoint_safe_globals']

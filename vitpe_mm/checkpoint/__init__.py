"""Checkpoint formats (official, timm, DeiT, mmseg, mmdet) -> vitpe_mm keys, with PE resizing on load."""
from . import swin, twins, vit  # noqa: F401  (register the 'swin', 'cpvt' and 'vit' formats)
from .loader import (
    CheckpointError,
    convert_state_dict,
    detect_format,
    formats_for,
    load_pretrained,
    load_state_dict_checked,
    read_checkpoint,
    register_format,
    unwrap_state_dict,
)
from .sources import CheckpointNotAvailableError, is_remote, resolve_checkpoint

__all__ = ['CheckpointError', 'CheckpointNotAvailableError', 'convert_state_dict', 'detect_format', 'formats_for',
           'is_remote', 'load_pretrained', 'load_state_dict_checked', 'read_checkpoint', 'register_format',
           'resolve_checkpoint', 'unwrap_state_dict']

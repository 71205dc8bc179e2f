"""Checkpoint formats (official, timm, DeiT, mmseg, mmdet) -> vitpe_mm keys, with PE resizing on load."""
from .loader import (CheckpointError, convert_state_dict, detect_format, formats_for, load_pretrained,
                     load_state_dict_checked, read_checkpoint, register_format, unwrap_state_dict)

__all__ = ['CheckpointError', 'convert_state_dict', 'detect_format', 'formats_for', 'load_pretrained',
           'load_state_dict_checked', 'read_checkpoint', 'register_format', 'unwrap_state_dict']

"""Registered backbones (mmengine's root MODELS registry, so mmdet and mmseg configs both find them)."""
from .base import PEBackbone

__all__ = ['PEBackbone']

"""Registered backbones (mmengine's root MODELS registry, so mmdet and mmseg configs both find them)."""
from .base import PEBackbone
from .cpvt import CPVTv2  # noqa: F401
from .swin import SwinRPB  # noqa: F401
from .vit import ViTPE  # noqa: F401

__all__ = ['PEBackbone']

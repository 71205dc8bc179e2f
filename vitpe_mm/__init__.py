"""vitpe_mm: ViT backbones built around their positional encodings, for MMDetection and MMSegmentation.

`custom_imports=dict(imports=['vitpe_mm'], allow_failed_imports=False)` registers the backbones.
"""
__version__ = '0.1.0'

from . import models  # noqa: E402,F401  (registers the backbones)

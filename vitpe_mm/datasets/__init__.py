"""Data helpers: procedurally drawn mini COCO / ADE20K trees and checks of a config's data layout (no mm* imports)."""
from .checks import check_data_layout, required_paths
from .mini import (COCO_CATEGORIES, ensure_mini_datasets, validate_mini_ade, validate_mini_coco, write_mini_ade,
                   write_mini_coco)

__all__ = ['check_data_layout', 'required_paths', 'COCO_CATEGORIES', 'ensure_mini_datasets', 'validate_mini_ade',
           'validate_mini_coco', 'write_mini_ade', 'write_mini_coco']

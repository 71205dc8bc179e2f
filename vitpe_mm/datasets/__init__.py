"""Data helpers: procedurally drawn mini COCO / ADE20K trees (and the resolution study's canvases and position probe),
and checks of a config's data layout (no mm* imports)."""
from .checks import check_data_layout, required_paths
from .mini import (
    COCO_CATEGORIES,
    PROBE_TEXTURES,
    STUDY_KINDS,
    canvas_size,
    canvas_suffix,
    ensure_mini_datasets,
    ensure_study_tree,
    probe_label,
    validate_mini_ade,
    validate_mini_coco,
    validate_study_tree,
    write_mini_ade,
    write_mini_coco,
)

__all__ = ['check_data_layout', 'required_paths', 'COCO_CATEGORIES', 'PROBE_TEXTURES', 'STUDY_KINDS', 'canvas_size',
           'canvas_suffix', 'ensure_mini_datasets', 'ensure_study_tree', 'probe_label', 'validate_mini_ade',
           'validate_mini_coco', 'validate_study_tree', 'write_mini_ade', 'write_mini_coco']

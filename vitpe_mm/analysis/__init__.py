"""Measuring what positional encodings do away from the training resolution: test-scale sweeps (tables, CSV/JSON,
plots), the PE ablation on the mini datasets, and maps of what a PE encodes.

`vitpe_mm.analysis.sweep` (mmengine runners) and `vitpe_mm.analysis.ablation` are imported on their own; what is
exported here needs torch, numpy and (for plots, lazily) matplotlib only.
"""
from .pe_maps import (
    centre_query_bias,
    find_pe_modules,
    peg_constant_response,
    pos_embed_grid,
    pos_embed_similarity,
    query_positions,
    rel_bias_table_maps,
    resampled_similarity,
)
from .plotting import plot_metric_vs_scale, save_head_maps, save_tiled_maps
from .results import (
    DET_COLUMNS,
    ROW_FIELDS,
    SEG_COLUMNS,
    STATUS_NA,
    STATUS_OK,
    MetricColumn,
    baseline_difference,
    columns_for,
    format_pivot,
    format_table,
    metric_row,
    read_csv,
    read_json,
    write_csv,
    write_json,
)
from .scales import (
    INFERENCE_MODES,
    ScaleSpec,
    TestScale,
    apply_test_scale,
    default_crop_size,
    find_test_resize,
    parse_scale,
    parse_scales,
    reference_scale,
    resolve_scales,
    set_inference_mode,
)

__all__ = [
    'centre_query_bias', 'find_pe_modules', 'peg_constant_response', 'pos_embed_grid', 'pos_embed_similarity',
    'query_positions', 'rel_bias_table_maps', 'resampled_similarity', 'plot_metric_vs_scale', 'save_head_maps',
    'save_tiled_maps', 'DET_COLUMNS', 'ROW_FIELDS', 'SEG_COLUMNS', 'STATUS_NA', 'STATUS_OK', 'MetricColumn',
    'baseline_difference', 'columns_for', 'format_pivot', 'format_table', 'metric_row', 'read_csv', 'read_json',
    'write_csv', 'write_json', 'INFERENCE_MODES', 'ScaleSpec', 'TestScale', 'apply_test_scale', 'default_crop_size',
    'find_test_resize', 'parse_scale', 'parse_scales', 'reference_scale', 'resolve_scales', 'set_inference_mode',
]

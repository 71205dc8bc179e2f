"""Torch-only building blocks: positional encodings (one interface, pos_encoding.py: absolute + resampling, PEG,
relative bias, RoPE), window helpers, fused attention, patch embedding. Nothing here imports mm*."""
from ._cache import SIZE_CACHE, SizeCache
from ._checks import check_choice, check_tokens, to_2tuple
from .attention import MultiheadSelfAttention, attention_with_bias
from .mlp import DropPath, Mlp, drop_path, linear_drop_path_rates
from .patch_embed import LayerNorm2d, PatchEmbed
from .peg import PosConvEncoding
from .pos_embed import (
                        AbsolutePositionEmbedding,
                        SinCosPositionEmbedding,
                        build_sincos_2d_pos_embed,
                        resample_abs_pos_embed,
)
from .pos_encoding import (
                        BlockPE,
                        BlockSpec,
                        PEContext,
                        PositionalEncoding,
                        PositionalEncodings,
                        Rotation,
                        StageSpec,
                        build_pos_encoding,
                        grid_token_positions,
                        parse_pe_type,
                        reduced_key_positions,
                        register_pos_encoding,
                        registered_pe_types,
                        window_token_positions,
)
from .rel_pos_bias import RelativePositionBias, relative_position_index, resize_rel_pos_bias_table
from .rope import AxialRoPE, DinoV3RoPE, MixedRoPE, apply_rope  # registers the rope_* encodings
from .sr_attention import SpatialReductionAttention, reduced_size
from .window import padded_size, shifted_window_attn_mask, window_partition, window_reverse

# The positional-encoding names every backbone accepts (`pe_type=`, a name or a list), for like-for-like
# ablations: every registered encoding (modules that register one are imported above).
PE_TYPES = registered_pe_types()

__all__ = [
    'AbsolutePositionEmbedding', 'apply_rope', 'attention_with_bias', 'AxialRoPE', 'BlockPE', 'BlockSpec',
    'build_pos_encoding', 'build_sincos_2d_pos_embed', 'check_choice', 'check_tokens', 'DinoV3RoPE', 'drop_path',
    'DropPath', 'grid_token_positions', 'LayerNorm2d', 'linear_drop_path_rates', 'MixedRoPE', 'Mlp',
    'MultiheadSelfAttention', 'padded_size', 'parse_pe_type', 'PatchEmbed', 'PE_TYPES', 'PEContext',
    'PosConvEncoding', 'PositionalEncoding', 'PositionalEncodings', 'reduced_key_positions', 'reduced_size',
    'register_pos_encoding', 'registered_pe_types', 'relative_position_index', 'RelativePositionBias',
    'resample_abs_pos_embed', 'resize_rel_pos_bias_table', 'Rotation', 'shifted_window_attn_mask',
    'SinCosPositionEmbedding', 'SIZE_CACHE', 'SizeCache', 'SpatialReductionAttention', 'StageSpec', 'to_2tuple',
    'window_partition', 'window_reverse', 'window_token_positions',
]

"""What a positional encoding encodes, as maps: absolute-PE similarity, relative-bias tables, the PEG's border signal.

* Absolute PE: for every grid position, the cosine similarity of its embedding with all others, tiled as in
  "An Image is Worth 16x16 Words" (ViT, arXiv:2010.11929, Fig. 7), before and after resampling the table to
  another grid (as detection and segmentation do).
* Relative position bias ("Swin Transformer", arXiv:2103.14030): the (2Mh-1) x (2Mw-1) table per head, and the
  bias the centre query adds to every key.
* PEG ("Conditional Positional Encodings for Vision Transformers", CPVT, arXiv:2102.10882): on a constant input the
  depthwise convolution gives the same output everywhere except where its zero padding reaches in, so
  PEG(x) - x shows the border signal from which the network can work out absolute position.
Pure torch (no mm* imports); functions take tensors and sizes and return tensors.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import (
    AbsolutePositionEmbedding,
    PosConvEncoding,
    RelativePositionBias,
    SinCosPositionEmbedding,
    relative_position_index,
    resample_abs_pos_embed,
    to_2tuple,
)

__all__ = ['pos_embed_grid', 'pos_embed_similarity', 'query_positions', 'resampled_similarity',
           'rel_bias_table_maps', 'centre_query_bias', 'peg_constant_response', 'find_pe_modules']


def pos_embed_grid(pos_embed: torch.Tensor, grid_size: Sequence[int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """The grid part of a (1, prefix + H*W, C) or (prefix + H*W, C) table as (H, W, C) float32."""
    h, w = to_2tuple(tuple(grid_size), 'grid_size')
    table = pos_embed.detach().float()
    if table.dim() == 3:
        if table.shape[0] != 1:
            raise ValueError(f'pos_embed must have shape (1, N, C) or (N, C), got {tuple(pos_embed.shape)}')
        table = table[0]
    if table.dim() != 2 or table.shape[0] != num_prefix_tokens + h * w:
        raise ValueError(f'pos_embed of shape {tuple(pos_embed.shape)} does not hold {num_prefix_tokens} prefix '
                         f'tokens + a {h}x{w} grid')
    return table[num_prefix_tokens:].reshape(h, w, -1)


def pos_embed_similarity(grid: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every position's embedding with every other: (H, W, C) -> (H, W, H, W).

    `out[i, j]` is the map of position (i, j) against the whole grid (1 at (i, j) itself).
    """
    if grid.dim() != 3:
        raise ValueError(f'grid must have shape (H, W, C), got {tuple(grid.shape)}')
    h, w, c = grid.shape
    flat = F.normalize(grid.float().reshape(h * w, c), dim=-1)  # H*W, C
    return (flat @ flat.t()).reshape(h, w, h, w)


def query_positions(size: int, max_queries: int) -> List[int]:
    """Up to `max_queries` evenly spaced indices in [0, size), both ends included."""
    if size <= max_queries:
        return list(range(size))
    return sorted({round(k * (size - 1) / (max_queries - 1)) for k in range(max_queries)})


def resampled_similarity(pos_embed: torch.Tensor, grid_size: Sequence[int], new_size: Sequence[int],
                         num_prefix_tokens: int = 0, interpolation: str = 'bicubic',
                         antialias: bool = True) -> torch.Tensor:
    """Similarity maps (new_h, new_w, new_h, new_w) of a table resampled from `grid_size` to `new_size` as the
    backbones do at a new input size (`resample_abs_pos_embed`)."""
    table = pos_embed.detach().float()
    if table.dim() == 2:
        table = table.unsqueeze(0)
    resampled = resample_abs_pos_embed(table, tuple(new_size), tuple(grid_size), num_prefix_tokens, interpolation,
                                       antialias)
    return pos_embed_similarity(pos_embed_grid(resampled, new_size, num_prefix_tokens))


def rel_bias_table_maps(table: torch.Tensor, window_size: Sequence[int]) -> torch.Tensor:
    """A ((2Mh-1)*(2Mw-1), nH) relative-bias table as nH maps of (2Mh-1, 2Mw-1); the centre is offset (0, 0),
    row = dy (query minus key) + Mh - 1, column = dx + Mw - 1 (the index of `relative_position_index`)."""
    mh, mw = to_2tuple(tuple(window_size), 'window_size')
    if table.dim() != 2 or table.shape[0] != (2 * mh - 1) * (2 * mw - 1):
        raise ValueError(f'table of shape {tuple(table.shape)} is not ((2*{mh}-1)*(2*{mw}-1), num_heads)')
    return table.detach().float().t().reshape(-1, 2 * mh - 1, 2 * mw - 1)


def centre_query_bias(table: torch.Tensor, window_size: Sequence[int],
                      key_size: Optional[Sequence[int]] = None) -> torch.Tensor:
    """The bias the centre query of an Mh x Mw window adds to each key: (nH, Kh, Kw).

    `key_size` for keys on a coarser grid (spatial-reduction attention); the table is then indexed as the
    attention indexes it (`relative_position_index(window_size, key_size)` on a table made for the key grid).
    """
    mh, mw = to_2tuple(tuple(window_size), 'window_size')
    kh, kw = to_2tuple(tuple(key_size), 'key_size') if key_size is not None else (mh, mw)
    if table.shape[0] != (2 * kh - 1) * (2 * kw - 1):
        raise ValueError(f'table of shape {tuple(table.shape)} is not made for a {kh}x{kw} key grid')
    index = relative_position_index((mh, mw), (kh, kw) if key_size is not None else None)  # Mh*Mw, Kh*Kw
    centre = (mh // 2) * mw + mw // 2
    bias = table.detach().float()[index[centre]]  # Kh*Kw, nH
    return bias.t().reshape(-1, kh, kw)


@torch.no_grad()
def peg_constant_response(peg: PosConvEncoding, grid_size: Sequence[int], value: float = 1.0) -> torch.Tensor:
    """PEG(x) - x for a constant input x = `value` on an H x W grid: (C, H, W).

    Inside the grid every channel gets the same number (its kernel sum times `value` plus its bias); where the
    kernel overlaps the zero padding it differs, which is the absolute-position signal a PEG gives.
    """
    h, w = to_2tuple(tuple(grid_size), 'grid_size')
    x = torch.full((1, peg.num_prefix_tokens + h * w, peg.embed_dims), float(value),
                   dtype=peg.proj[0].weight.dtype, device=peg.proj[0].weight.device)
    delta = peg(x, (h, w)) - x  # 1, prefix + H*W, C
    return delta[0, peg.num_prefix_tokens:].t().reshape(peg.embed_dims, h, w).float().cpu()


def find_pe_modules(model: nn.Module) -> Dict[str, List[Tuple[str, nn.Module]]]:
    """The positional-encoding modules of a backbone by kind: {'abs': [...], 'sincos': [...], 'rel_bias': [...],
    'peg': [...]}, each a list of (qualified name, module) in model order."""
    found = {'abs': [], 'sincos': [], 'rel_bias': [], 'peg': []}
    for name, module in model.named_modules():
        if isinstance(module, AbsolutePositionEmbedding):
            found['abs'].append((name, module))
        elif isinstance(module, SinCosPositionEmbedding):
            found['sincos'].append((name, module))
        elif isinstance(module, RelativePositionBias):
            found['rel_bias'].append((name, module))
        elif isinstance(module, PosConvEncoding):
            found['peg'].append((name, module))
    return found

"""Spatial-reduction attention: queries on the full token grid, keys/values on a grid reduced by a strided conv.

"Pyramid Vision Transformer" (PVT, arXiv:2102.12122), called global sub-sampled attention (GSA) in
"Twins: Revisiting the Design of Spatial Attention in Vision Transformers" (arXiv:2104.13840). Keys
and values come from a k = s = sr_ratio convolution + LayerNorm of the token map; the reduced grid is
floor(H / sr) x floor(W / sr) as in the reference code (trailing rows/columns that do not fill a
whole sr x sr cell are not seen by the keys). Runs on `F.scaled_dot_product_attention`; a positional
encoding (`pos_encoding.BlockPE`) gives a bias between the query grid and the reduced key grid (added inside the
kernel) and / or a rotation of queries at their grid positions and keys at the centres of their reduced cells.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ._checks import check_tokens
from .attention import attention_with_bias, rotate_qk
from .pos_encoding import BlockPE, grid_token_positions, reduced_key_positions


def reduced_size(hw_shape: Sequence[int], sr_ratio: int) -> Tuple[int, int]:
    """Key/value grid of a spatial-reduction attention: floor(H / sr) x floor(W / sr) (conv k = s = sr)."""
    return hw_shape[0] // sr_ratio, hw_shape[1] // sr_ratio


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys/values are spatially reduced by `sr_ratio`.

    Parameter names follow timm/Twins `GlobalSubSampleAttn` (`q`, `kv`, `sr`, `norm`, `proj`) so their
    checkpoints load without a key map; with `sr_ratio == 1` there is no `sr`/`norm` and keys come from
    the tokens themselves (plain global attention).

    Args:
        embed_dims: channels C.
        num_heads: heads; must divide C.
        sr_ratio: kernel size and stride of the reduction conv (1: no reduction).
        qkv_bias: bias on the `q` and `kv` projections.
        qk_scale: override of head_dims ** -0.5.
        attn_drop_rate: dropout on attention weights (training only).
        proj_drop_rate: dropout after the output projection.
        norm_eps: eps of the LayerNorm on the reduced keys (1e-5 in Twins/timm/mmseg).
    """

    def __init__(self, embed_dims: int, num_heads: int, sr_ratio: int = 1, qkv_bias: bool = True,
                 qk_scale: Optional[float] = None, attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 norm_eps: float = 1e-5) -> None:
        super().__init__()
        if num_heads <= 0 or embed_dims % num_heads:
            raise ValueError(f'num_heads={num_heads} must be positive and divide embed_dims={embed_dims}')
        if isinstance(sr_ratio, bool) or not isinstance(sr_ratio, int) or sr_ratio < 1:
            raise ValueError(f'sr_ratio must be an int >= 1, got {sr_ratio!r}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = qk_scale or self.head_dims ** -0.5
        self.sr_ratio = sr_ratio
        self.attn_drop_rate = attn_drop_rate
        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            # channels-last weight: the conv reads the token map and writes the reduced tokens without copies
            self.sr.to(memory_format=torch.channels_last)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        else:
            self.sr = None
            self.norm = None

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int], pe: Optional[BlockPE] = None) -> torch.Tensor:
        """x: (B, H*W, C) tokens of the grid `hw_shape`; `pe` the block's positional encoding. Returns (B, H*W, C).

        Raises a ValueError when the grid is smaller than `sr_ratio` (the reduced grid would be empty).
        """
        h, w = check_tokens(x, hw_shape)
        b, n, c = x.shape
        # B, N, C -> B, nH, N, d
        q = self.q(x).view(b, n, self.num_heads, self.head_dims).transpose(1, 2)
        if self.sr is not None:
            if h < self.sr_ratio or w < self.sr_ratio:
                raise ValueError(f'token grid {h}x{w} is smaller than sr_ratio={self.sr_ratio}: spatial-reduction '
                                 f'attention needs a grid of at least {self.sr_ratio}x{self.sr_ratio}')
            feat = x.transpose(1, 2).reshape(b, c, h, w)  # B, N, C -> B, C, H, W
            feat = self.sr(feat)  # B, C, H // sr, W // sr
            key_hw = (feat.shape[2], feat.shape[3])
            x_kv = self.norm(feat.flatten(2).transpose(1, 2))  # B, C, h, w -> B, h*w, C
        else:
            key_hw, x_kv = (h, w), x
        # B, M, 2C -> 2, B, nH, M, d
        k, v = self.kv(x_kv).view(b, -1, 2, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4).unbind(0)
        bias = pe.attn_bias((h, w), key_hw) if pe is not None else None  # nH, N, M
        if pe is not None and pe.rotates:
            q_pos = grid_token_positions((h, w), x.device)
            k_pos = reduced_key_positions((h, w), self.sr_ratio, x.device) if self.sr is not None else q_pos
            q, k = rotate_qk(q, k, pe.rotation(q_pos, k_pos))
        x = attention_with_bias(q, k, v, bias, self.attn_drop_rate if self.training else 0.0, self.scale)
        x = x.transpose(1, 2).reshape(b, n, c)  # B, nH, N, d -> B, N, C
        return self.proj_drop(self.proj(x))

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, sr_ratio={self.sr_ratio}'

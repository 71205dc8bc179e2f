"""Patch embedding: a strided convolution from an image (or feature map) to tokens plus their grid.

"An Image is Worth 16x16 Words" (arXiv:2010.11929). Any input size: the input is zero-padded at the
bottom/right to a multiple of the stride, so the grid is ceil(H / s) x ceil(W / s).
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import Size2, to_2tuple


class PatchEmbed(nn.Module):
    """B, C_in, H, W -> (B, N, C tokens, (Hp, Wp)), with parameter names `proj`, `norm` as timm.

    Args:
        in_channels: input channels; another count raises a ValueError naming both.
        embed_dims: output channels.
        patch_size: kernel size of the projection.
        stride: stride (defaults to patch_size: non-overlapping patches).
        padding: explicit conv padding (overlapping embeddings); 0 for patches.
        norm_layer: optional norm over channels applied to the tokens (e.g. nn.LayerNorm).
    """

    def __init__(self, in_channels: int = 3, embed_dims: int = 768, patch_size: Size2 = 16,
                 stride: Optional[Size2] = None, padding: int = 0, norm_layer: Optional[type] = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.patch_size = to_2tuple(patch_size, 'patch_size')
        self.stride = to_2tuple(stride if stride is not None else patch_size, 'stride')
        self.padding = padding
        self.proj = nn.Conv2d(in_channels, embed_dims, self.patch_size, self.stride, padding, bias=bias)
        self.norm = norm_layer(embed_dims) if norm_layer is not None else None

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        if x.dim() != 4:
            raise ValueError(f'expected a B, C, H, W image batch, got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'input has {x.shape[1]} channels but the patch embedding takes in_channels={self.in_channels}; '
                'convert grayscale/RGBA images to RGB (or set in_channels)')
        h, w = x.shape[-2:]
        kh, kw = self.patch_size
        if h + 2 * self.padding < kh or w + 2 * self.padding < kw:
            raise ValueError(f'input of {h}x{w} is smaller than the patch size {kh}x{kw}')
        sh, sw = self.stride
        # the padding that makes (size - kernel) a stride multiple, as a ceil-division: under torch.compile
        # with dynamic sizes, inductor reasons about (n + s - 1) // s but not about the modulo form
        span_h, span_w = h + 2 * self.padding - kh, w + 2 * self.padding - kw
        pad_h = (span_h + sh - 1) // sh * sh - span_h
        pad_w = (span_w + sw - 1) // sw * sw - span_w
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw_shape = (x.shape[2], x.shape[3])
        x = x.flatten(2).transpose(1, 2)  # B, C, H, W -> B, N, C
        if self.norm is not None:
            x = self.norm(x)
        return x, hw_shape


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of a B, C, H, W map (ViTDet's simple feature pyramid, ConvNeXt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # B, C, H, W -> B, H, W, C -> B, C, H, W
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)

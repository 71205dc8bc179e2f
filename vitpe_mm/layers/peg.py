"""Conditional positional encoding: the Positional Encoding Generator (PEG, "PosCNN").

"Conditional Positional Encodings for Vision Transformers" (CPVT, arXiv:2102.10882): a depthwise
k x k convolution with zero padding (k - 1) / 2 on the 2-D token map, added back as a residual. The
zero padding lets border tokens learn where the image edge is, so the encoding carries absolute
position although the convolution itself is translation-equivariant.
"""
from typing import Sequence

import torch
import torch.nn as nn

from ._checks import check_tokens


class PosConvEncoding(nn.Module):
    """PEG: `x + DWConv_k(x)` on B, N, C tokens laid out as the grid `hw_shape`.

    Parameter names follow CPVT/Twins/timm (`proj.0.weight`, `proj.0.bias`) so their checkpoints load
    without a key map.

    Args:
        embed_dims: channels C (one depthwise filter per channel).
        kernel_size: odd, >= 3; padding is (kernel_size - 1) // 2 (zeros).
        num_prefix_tokens: leading tokens (e.g. cls) passed through unchanged.
    """

    def __init__(self, embed_dims: int, kernel_size: int = 3, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 3 or kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be an odd int >= 3 (zero padding keeps the grid), got {kernel_size!r}')
        if embed_dims <= 0:
            raise ValueError(f'embed_dims must be positive, got {embed_dims}')
        self.embed_dims = embed_dims
        self.kernel_size = kernel_size
        self.num_prefix_tokens = num_prefix_tokens
        self.proj = nn.Sequential(
            nn.Conv2d(embed_dims, embed_dims, kernel_size, 1, (kernel_size - 1) // 2, bias=True, groups=embed_dims))
        # The tokens are a channels-last map: with a channels-last weight the conv runs on them as they are
        # (a contiguous weight makes oneDNN convert input, output and gradients to NCHW: ~5x slower on CPU).
        self.proj.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int]) -> torch.Tensor:
        h, w = check_tokens(x, hw_shape, 'x', self.num_prefix_tokens)
        if x.shape[2] != self.embed_dims:
            raise ValueError(f'x has {x.shape[2]} channels, PosConvEncoding was built for embed_dims={self.embed_dims}')
        prefix, tokens = x[:, :self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        b, n, c = tokens.shape
        # B, N, C -> B, C, H, W (a channels-last view: no copy)
        feat = tokens.transpose(1, 2).reshape(b, c, h, w)
        out = (self.proj(feat) + feat).flatten(2).transpose(1, 2)  # B, C, H, W -> B, N, C
        return torch.cat([prefix, out], dim=1) if self.num_prefix_tokens else out

    def extra_repr(self) -> str:
        return f'embed_dims={self.embed_dims}, kernel_size={self.kernel_size}'

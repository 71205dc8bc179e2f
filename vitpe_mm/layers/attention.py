"""Multi-head self-attention on `torch.nn.functional.scaled_dot_product_attention` with an additive bias.

"Attention Is All You Need" (arXiv:1706.03762); the bias carries relative position tables and shifted-
window masks ("Swin Transformer", arXiv:2103.14030) into the fused kernel instead of an explicit
softmax(Q K^T * scale + B) V.
"""
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F


def attention_with_bias(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        attn_bias: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                        scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q k^T * scale + attn_bias) v for q, k, v of shape (B, nH, N, d).

    `attn_bias` broadcasts to (B, nH, Nq, Nk), or has shape (nW, nH or 1, Nq, Nk) for B = batch * nW
    windows (Swin's per-window masks): the windows are then viewed as (batch, nW, ...) so the bias
    is never repeated per image.
    """
    if attn_bias is not None:
        if attn_bias.dtype.is_floating_point and attn_bias.dtype != q.dtype:
            attn_bias = attn_bias.to(q.dtype)
        if attn_bias.dim() == 4 and attn_bias.shape[0] not in (1, q.shape[0]):
            num_windows = attn_bias.shape[0]
            if q.shape[0] % num_windows:
                raise ValueError(f'attn_bias holds {num_windows} windows, which does not divide the batch of '
                                 f'{q.shape[0]} windows')
            lead = (q.shape[0] // num_windows, num_windows)
            out = F.scaled_dot_product_attention(
                q.view(*lead, *q.shape[1:]), k.view(*lead, *k.shape[1:]), v.view(*lead, *v.shape[1:]),
                attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)
            return out.view(q.shape[0], *out.shape[2:])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with a fused `qkv` projection (timm/Swin parameter names `qkv`, `proj`).

    Args:
        embed_dims: channels C.
        num_heads: heads; must divide C.
        qkv_bias: bias on the qkv projection.
        qk_scale: override of head_dims ** -0.5.
        attn_drop_rate: dropout on attention weights (training only).
        proj_drop_rate: dropout after the output projection.
    """

    def __init__(self, embed_dims: int, num_heads: int, qkv_bias: bool = True, qk_scale: Optional[float] = None,
                 attn_drop_rate: float = 0.0, proj_drop_rate: float = 0.0) -> None:
        super().__init__()
        if num_heads <= 0 or embed_dims % num_heads:
            raise ValueError(f'num_heads={num_heads} must be positive and divide embed_dims={embed_dims}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.scale = qk_scale or self.head_dims ** -0.5
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.attn_drop_rate = attn_drop_rate
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop_rate)

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, N, C); attn_bias as in `attention_with_bias`. Returns (B, N, C)."""
        b, n, c = x.shape
        # B, N, 3C -> 3, B, nH, N, d
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = attention_with_bias(q, k, v, attn_bias, self.attn_drop_rate if self.training else 0.0, self.scale)
        x = x.transpose(1, 2).reshape(b, n, c)  # B, nH, N, d -> B, N, C
        return self.proj_drop(self.proj(x))

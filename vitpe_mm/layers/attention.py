"""Multi-head self-attention on `torch.nn.functional.scaled_dot_product_attention` with an additive bias.

"Attention Is All You Need" (arXiv:1706.03762); the bias carries relative position tables and shifted-
window masks ("Swin Transformer", arXiv:2103.14030) into the fused kernel instead of an explicit
softmax(Q K^T * scale + B) V, except on CPU where the explicit product is faster (`use_fused_attention`).
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._compat import TORCH_VERSION, assume_constant_result, is_compiling

# On CPU the fused kernel (flash attention for CPU) works on query/key tiles of 32+ tokens: for small windows
# (Swin's 7x7: 49 x 49 scores) the explicit product is faster, forward and backward, in fp32 and bf16 (Swin-T
# bf16 training at 512x512: 1.21x mmdet's speed at 0.87x its memory, against 1.08x and 1.05x with the fused
# kernel). Its backward runs one (batch, head) pair per thread: with fewer pairs than threads (PCPVT's
# single-head first stage at batch 1) the queries are split into extra heads (`cpu_query_splits`).
# Measured with tools/benchmark.py.
CPU_FUSED_MIN_SCORES = 128 * 128


@assume_constant_result
def _num_threads() -> int:
    """torch.get_num_threads(), read once per compiled graph under torch.compile (dynamo cannot trace it)."""
    return torch.get_num_threads()


def use_fused_attention(q: torch.Tensor, k: torch.Tensor, needs_grad: bool) -> bool:
    """Whether `attention_with_bias` runs `F.scaled_dot_product_attention` (else the explicit product)."""
    if q.device.type != 'cpu' or is_compiling():
        return True
    if q.shape[-2] * k.shape[-2] < CPU_FUSED_MIN_SCORES:
        return False
    if q.dtype not in (torch.float32, torch.float64):
        return True  # bf16 / fp16: the kernel keeps the scores and the softmax in float32
    return not needs_grad or math.prod(q.shape[:-2]) >= _num_threads()


def cpu_query_splits(q: torch.Tensor, k: torch.Tensor, attn_bias: Optional[torch.Tensor], needs_grad: bool) -> int:
    """Query groups for `_fused_split_queries` on CPU (1: do not split).

    The CPU flash kernel's backward runs one (batch, head) pair per thread: PCPVT's single-head first stage at
    batch 1 would train on one thread. Cut into groups the queries become extra heads, and the fused kernel
    keeps its memory (no N x M scores saved: 16 MiB per stage-1 block at 512x512, 280 MiB at 800x1333).
    """
    if (q.device.type != 'cpu' or not needs_grad or attn_bias is not None
            or q.shape[-2] * k.shape[-2] < CPU_FUSED_MIN_SCORES):
        return 1
    if TORCH_VERSION < (2, 2) and is_compiling():
        return 1  # torch 2.1's inductor miscompiles the expanded keys (a stride assertion fails at run time)
    batch_heads = math.prod(q.shape[:-2])
    threads = _num_threads()
    if batch_heads >= threads:
        return 1
    splits = -(-threads // batch_heads)
    n = q.shape[-2]
    return splits if n % splits == 0 and n // splits >= 64 else 1


def _fused_split_queries(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float, scale: float,
                         splits: int) -> torch.Tensor:
    """`F.scaled_dot_product_attention` with the queries of every (batch, head) cut into `splits` groups that
    attend to the same keys as extra heads (each query row is independent: the result is the same)."""
    *lead, n, d = q.shape
    heads = lead[-1] if lead else 1
    outer = lead[:-1]
    qs = q.reshape(*outer, heads * splits, n // splits, d)
    # (..., heads, M, d) -> (..., heads * splits, M, d); two plain calls, not a generator (dynamo in torch 2.1
    # cannot unpack one)
    ks = k.unsqueeze(-3).expand(*k.shape[:-2], splits, *k.shape[-2:]).reshape(*outer, heads * splits, *k.shape[-2:])
    vs = v.unsqueeze(-3).expand(*v.shape[:-2], splits, *v.shape[-2:]).reshape(*outer, heads * splits, *v.shape[-2:])
    out = F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout_p, scale=scale)
    return out.reshape(*lead, n, out.shape[-1])


def _explicit_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: Optional[torch.Tensor],
                        dropout_p: float, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + bias) v with the scores materialised, as the references compute it.

    The scale (and a bias that needs no broadcasting over the batch) go into one batched GEMM; q, k, v may be
    strided views (e.g. of one qkv tensor): nothing is copied and autograd saves no scaled copy of q.
    """
    lead, nq, nk = q.shape[:-2], q.shape[-2], k.shape[-2]
    q3, k3, v3 = (t.reshape(-1, t.shape[-2], t.shape[-1]) for t in (q, k, v))  # views where strides allow
    fused_bias, rest = None, attn_bias
    if attn_bias is not None and attn_bias.dtype != torch.bool:
        lead_bias = attn_bias.shape[:-2]
        if all(size == 1 for size in lead_bias) or tuple(lead_bias) == tuple(lead):
            fused_bias, rest = attn_bias.reshape(-1, nq, nk), None
    if fused_bias is None:
        attn = torch.baddbmm(q3.new_zeros(()), q3, k3.transpose(1, 2), beta=0.0, alpha=scale)  # B', Nq, Nk
    else:
        attn = torch.baddbmm(fused_bias, q3, k3.transpose(1, 2), alpha=scale)
    if rest is not None:
        scores = attn.view(*lead, nq, nk)
        if rest.dtype == torch.bool:
            attn = scores.masked_fill(~rest, float('-inf')).view_as(attn)
        elif rest.dim() == 4 and rest.shape[0] not in (1, scores.shape[0]):
            scores.view(-1, rest.shape[0], *scores.shape[1:]).add_(rest)  # per-window bias: B*nW -> B, nW
        else:
            scores.add_(rest)
    attn = attn.softmax(dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, dropout_p)
    return torch.bmm(attn, v3).view(*lead, nq, v.shape[-1])


def attention_with_bias(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        attn_bias: Optional[torch.Tensor] = None, dropout_p: float = 0.0,
                        scale: Optional[float] = None) -> torch.Tensor:
    """softmax(q k^T * scale + attn_bias) v for q, k, v of shape (B, nH, N, d).

    `attn_bias` broadcasts to (B, nH, Nq, Nk), or has shape (nW, nH or 1, Nq, Nk) for B = batch * nW
    windows (Swin's per-window masks): the windows are then viewed as (batch, nW, ...) so the bias
    is never repeated per image. Runs `F.scaled_dot_product_attention` on GPUs, under torch.compile and
    for large CPU problems; the explicit product where the CPU kernel is slow (`use_fused_attention`).
    Returns (B, nH, Nq, d).
    """
    if attn_bias is not None:
        if attn_bias.dtype.is_floating_point and attn_bias.dtype != q.dtype:
            attn_bias = attn_bias.to(q.dtype)
        if attn_bias.dim() == 4 and attn_bias.shape[0] not in (1, q.shape[0]) and q.shape[0] % attn_bias.shape[0]:
            raise ValueError(f'attn_bias holds {attn_bias.shape[0]} windows, which does not divide the batch of '
                             f'{q.shape[0]} windows')
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    needs_grad = torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)
    splits = cpu_query_splits(q, k, attn_bias, needs_grad)  # also under torch.compile: the same aten kernel
    if splits > 1:
        return _fused_split_queries(q, k, v, dropout_p, scale, splits)
    if not use_fused_attention(q, k, needs_grad):
        return _explicit_attention(q, k, v, attn_bias, dropout_p, scale)
    if attn_bias is not None and attn_bias.dim() == 4 and attn_bias.shape[0] not in (1, q.shape[0]):
        num_windows = attn_bias.shape[0]
        lead = (q.shape[0] // num_windows, num_windows)
        if q.device.type == 'cpu':
            out = F.scaled_dot_product_attention(
                q.reshape(*lead, *q.shape[1:]), k.reshape(*lead, *k.shape[1:]), v.reshape(*lead, *v.shape[1:]),
                attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)
            return out.reshape(q.shape[0], *out.shape[2:])
        # GPU kernels take 4-D inputs only: repeat the per-window bias for every image
        attn_bias = attn_bias.repeat(lead[0], 1, 1, 1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p, scale=scale)


def pad_prefix_bias(bias: Optional[torch.Tensor], num_prefix_tokens: int) -> Optional[torch.Tensor]:
    """(nH, N, N) bias over grid tokens -> (nH, p + N, p + N): prefix tokens (cls, dist) get zeros."""
    if bias is None or not num_prefix_tokens:
        return bias
    return F.pad(bias, (num_prefix_tokens, 0, num_prefix_tokens, 0))


def rotate_qk(q: torch.Tensor, k: torch.Tensor, rotation, num_prefix_tokens: int = 0
              ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Applies a `pos_encoding.Rotation` (or None: nothing) to q and k of shape (B', nH, N, d) with
    `rope.apply_rope`; the first `num_prefix_tokens` tokens (cls, dist) are not rotated. For B' = batch * nW
    windows the rotation has a leading nW dimension."""
    if rotation is None:
        return q, k
    from .rope import apply_rope
    return (apply_rope(q, rotation.q_sin, rotation.q_cos, rotation.half, num_prefix_tokens),
            apply_rope(k, rotation.k_sin, rotation.k_cos, rotation.half, num_prefix_tokens))


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

    def forward(self, x: torch.Tensor, attn_bias: Optional[torch.Tensor] = None, rotation=None,
                num_prefix_tokens: int = 0) -> torch.Tensor:
        """x: (B, N, C); attn_bias as in `attention_with_bias`; `rotation` (a `pos_encoding.Rotation`) as in
        `rotate_qk`. Returns (B, N, C)."""
        b, n, c = x.shape
        # B, N, 3C -> 3, B, nH, N, d
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dims).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = rotate_qk(q, k, rotation, num_prefix_tokens)
        x = attention_with_bias(q, k, v, attn_bias, self.attn_drop_rate if self.training else 0.0, self.scale)
        x = x.transpose(1, 2).reshape(b, n, c)  # B, nH, N, d -> B, N, C
        return self.proj_drop(self.proj(x))

"""U-Net building blocks of Ho et al. 2020 (appendix B): residual blocks with timestep injection,
self-attention, and 2x down/up-sampling; with IDDPM's options (Nichol & Dhariwal 2021): several attention heads
and scale-shift normalisation of the timestep embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(channels: int, groups: int = 32) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero the last layer of a residual branch so each block starts as the identity (as in DDPM's code)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 (+ Linear(SiLU(temb))) -> GroupNorm -> SiLU -> dropout -> conv3x3, plus skip.

    ``scale_shift_norm`` (IDDPM): the embedding gives (scale, shift) and the second norm becomes
    GroupNorm(h) * (1 + scale) + shift, instead of adding the embedding before it.
    x (B, in_ch, H, W), temb (B, temb_dim) -> (B, out_ch, H, W).
    """

    def __init__(
        self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, groups: int = 32, scale_shift_norm: bool = False
    ) -> None:
        super().__init__()
        self.scale_shift_norm = scale_shift_norm
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, 2 * out_ch if scale_shift_norm else out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        emb = self.temb_proj(F.silu(temb))[:, :, None, None]
        if self.scale_shift_norm:
            scale, shift = emb.chunk(2, dim=1)
            h = self.norm2(h) * (1 + scale) + shift
        else:
            h = self.norm2(h + emb)
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Self-attention with ``num_heads`` heads over the H*W positions, with a residual connection:
    (B, C, H, W) -> same (DDPM: 1 head; IDDPM: 4).

    Uses ``scaled_dot_product_attention`` so PyTorch picks a fused (flash / memory-efficient) kernel. q, k and v
    are views of the qkv projection laid out as (B, HW, 3, heads, C / heads), which is its memory layout under
    channels_last: no copy in, and ``unbind`` gives their gradients back as one stacked tensor (slicing them off
    would zero-fill and add a full-size gradient for each). With one head the output needs no copy either.
    """

    def __init__(self, channels: int, groups: int = 32, num_heads: int = 1) -> None:
        super().__init__()
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"attention over {channels} channels cannot be split into num_heads={num_heads} heads.")
        self.num_heads = num_heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        heads = self.num_heads
        qkv = self.qkv(self.norm(x)).permute(0, 2, 3, 1).reshape(b, h * w, 3, heads, c // heads)
        q, k, v = (part.transpose(1, 2) for part in qkv.unbind(2))  # each (B, heads, HW, C / heads)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, C / heads)
        return x + self.proj(out.transpose(1, 2).reshape(b, h, w, c).permute(0, 3, 1, 2))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour 2x upsampling then a 3x3 convolution: (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))

"""The DDPM U-Net (Ho et al. 2020, appendix B; a PixelCNN++-style wide ResNet with self-attention).

With base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2 and attention at 16x16 on 32x32 inputs,
this is the paper's 35.7M-parameter CIFAR-10 model. IDDPM's CIFAR-10 model (Nichol & Dhariwal 2021) adds
num_res_blocks=3, attention at 16 and 8, num_heads=4 and scale_shift_norm=True.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import TimestepEmbedding
from .unet_blocks import AttentionBlock, Downsample, ResBlock, Upsample, group_norm, zero_init


class UNet(nn.Module):
    """eps/x0/v network for images: forward(x (B, C, H, W), t (B,), y (B,) | None) -> (B, out_channels, H, W).

    Args:
        sample_shape: (C, H, W) of the data; H must equal W and be divisible by 2^(len(channel_mults) - 1).
        base_channels: width of the first level; level i has base_channels * channel_mults[i] channels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attention_resolutions: feature-map sizes (e.g. 16) at which self-attention follows each ResBlock.
        learned_variance: output 2C channels ([mean part, variance part]) instead of C.
        num_heads: attention heads (DDPM 1, IDDPM 4); every level's width must be divisible by it.
        scale_shift_norm: IDDPM's GroupNorm(h) * (1 + scale) + shift timestep conditioning in the ResBlocks.
        num_classes: for a class-conditional network, the number of classes: a learned class embedding is
            added to the timestep embedding (IDDPM's class conditioning), with one extra "null" class
            (index ``num_classes``, also what y=None means) for classifier-free guidance.
    """

    def __init__(
        self,
        sample_shape: Sequence[int],
        base_channels: int = 128,
        channel_mults: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16,),
        dropout: float = 0.1,
        learned_variance: bool = False,
        num_groups: int = 32,
        num_heads: int = 1,
        scale_shift_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
            raise ValueError(f"num_classes must be a positive integer or None, got {num_classes!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        validate_unet_shape(sample_shape, base_channels, channel_mults, attention_resolutions, num_groups, num_heads)
        in_channels, image_size = int(sample_shape[0]), int(sample_shape[1])
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.in_channels = in_channels
        self.out_channels = in_channels * (2 if learned_variance else 1)
        temb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedding(base_channels, temb_dim)
        self.class_embed = None if self.num_classes is None else nn.Embedding(self.num_classes + 1, temb_dim)
        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        def res(cin: int, cout: int) -> ResBlock:
            return ResBlock(cin, cout, temb_dim, dropout, num_groups, scale_shift_norm)

        def attention(channels: int) -> AttentionBlock:
            return AttentionBlock(channels, num_groups, num_heads)

        self.down = nn.ModuleList()
        skip_channels, ch, resolution = [base_channels], base_channels, image_size
        for level, mult in enumerate(channel_mults):
            for _ in range(num_res_blocks):
                layers = [res(ch, base_channels * mult)]
                ch = base_channels * mult
                if resolution in attention_resolutions:
                    layers.append(attention(ch))
                self.down.append(nn.ModuleList(layers))
                skip_channels.append(ch)
            if level != len(channel_mults) - 1:
                self.down.append(nn.ModuleList([Downsample(ch)]))
                skip_channels.append(ch)
                resolution //= 2
        self.middle = nn.ModuleList([res(ch, ch), attention(ch), res(ch, ch)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for _ in range(num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), base_channels * mult)]
                ch = base_channels * mult
                if resolution in attention_resolutions:
                    layers.append(attention(ch))
                self.up.append(nn.ModuleList(layers))
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(ch)]))
                resolution *= 2
        self.norm_out = group_norm(ch, num_groups)
        self.conv_out = zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    @staticmethod
    def _run_layers(layers: nn.ModuleList, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        temb = self.time_embed(t)
        if self.class_embed is not None:
            y = torch.full_like(t, self.num_classes, dtype=torch.long) if y is None else y
            temb = temb + self.class_embed(y)
        elif y is not None:
            raise ValueError("this UNet was built without num_classes, so it cannot take class labels y.")
        h = self.conv_in(x)
        skips = [h]
        for layers in self.down:
            h = self._run_layers(layers, h, temb)
            skips.append(h)
        h = self._run_layers(self.middle, h, temb)
        for layers in self.up:
            if isinstance(layers[0], ResBlock):
                h = torch.cat([h, skips.pop()], dim=1)
            h = self._run_layers(layers, h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))


def validate_unet_shape(
    sample_shape: Sequence[int],
    base_channels: int,
    channel_mults: Sequence[int],
    attention_resolutions: Sequence[int],
    num_groups: int = 32,
    num_heads: int = 1,
) -> None:
    """Raise a ValueError naming the offending option if the U-Net cannot be built for this data shape."""
    if len(sample_shape) != 3 or sample_shape[1] != sample_shape[2]:
        raise ValueError(f"UNet needs square images (C, H, H); got sample_shape={tuple(sample_shape)}.")
    image_size, factor = int(sample_shape[1]), 2 ** (len(channel_mults) - 1)
    if image_size % factor:
        raise ValueError(
            f"image size {image_size} is not divisible by {factor}, the U-Net's total downsampling for "
            f"channel_mults={list(channel_mults)} ({len(channel_mults)} levels). Use an image size that is a "
            f"multiple of {factor} (data.image_size) or fewer levels (model.channel_mults)."
        )
    present = [image_size // 2**i for i in range(len(channel_mults))]
    missing = [r for r in attention_resolutions if r not in present]
    if missing:
        raise ValueError(
            f"attention_resolutions {missing} are not feature-map sizes of this U-Net; for image size "
            f"{image_size} and {len(channel_mults)} levels they are {present} (model.attention_resolutions)."
        )
    widths = {base_channels * m for m in channel_mults}
    bad = sorted(w for w in widths if w % min(num_groups, w))
    if bad:
        raise ValueError(f"channel widths {bad} are not divisible by GroupNorm's {num_groups} groups.")
    split = sorted(w for w in widths if num_heads < 1 or w % num_heads)
    if split:
        raise ValueError(f"channel widths {split} cannot be split into num_heads={num_heads} attention heads.")

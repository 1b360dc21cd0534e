"""CARAFE modules, drop-ins for mmcv's ``CARAFE`` and ``CARAFEPack``.

``CARAFEPack`` keeps mmcv's submodule names (``channel_compressor``,
``content_encoder``), encoder channel order, kernel normaliser and
initialisation, so a state_dict trained with mmcv/mmdetection loads unchanged.
"""

import torch.nn.functional as F
from torch import Tensor, nn

from ._checks import require_sizes
from .ops import carafe


class CARAFE(nn.Module):
    """Reassembly with externally predicted kernels (no parameters).

    forward(features (N, C, H, W), masks (N, k*k*G, s*H, s*W)) -> (N, C, s*H, s*W).
    """

    def __init__(self, kernel_size: int, group_size: int, scale_factor: int):
        super().__init__()
        require_sizes(
            "CARAFE",
            odd=("kernel_size",),
            kernel_size=kernel_size,
            group_size=group_size,
            scale_factor=scale_factor,
        )
        self.kernel_size = kernel_size
        self.group_size = group_size
        self.scale_factor = scale_factor

    def forward(self, features: Tensor, masks: Tensor) -> Tensor:
        return carafe(features, masks, self.kernel_size, self.group_size, self.scale_factor)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, group_size={self.group_size}, "
            f"scale_factor={self.scale_factor}"
        )


class CARAFEPack(nn.Module):
    """The CARAFE upsampler of the paper (Sec. 3): kernel prediction + reassembly.

    A 1x1 ``channel_compressor`` (C -> C_m), a ``content_encoder`` conv
    (k_enc x k_enc, C_m -> s*s*G*k_up*k_up) whose output is pixel-shuffled to
    (G*k_up*k_up, s*H, s*W) and softmax-normalised over each k_up*k_up kernel,
    then :func:`carafe.carafe`.

    Args:
        channels: C, input channels (= output channels).
        scale_factor: s.
        up_kernel: k_up, reassembly kernel size (paper: 5).
        up_group: G, kernel groups.
        encoder_kernel: k_enc (paper: 3).
        encoder_dilation: dilation of the content encoder.
        compressed_channels: C_m (paper: 64).

    forward(x (N, C, H, W)) -> (N, C, s*H, s*W).
    """

    def __init__(
        self,
        channels: int,
        scale_factor: int,
        up_kernel: int = 5,
        up_group: int = 1,
        encoder_kernel: int = 3,
        encoder_dilation: int = 1,
        compressed_channels: int = 64,
    ):
        super().__init__()
        require_sizes(
            "CARAFEPack",
            odd=("up_kernel", "encoder_kernel"),
            channels=channels,
            scale_factor=scale_factor,
            up_kernel=up_kernel,
            up_group=up_group,
            encoder_kernel=encoder_kernel,
            encoder_dilation=encoder_dilation,
            compressed_channels=compressed_channels,
        )
        if channels % up_group != 0:
            raise ValueError(
                f"CARAFEPack: up_group must divide channels={channels}, got {up_group}"
            )
        self.channels = channels
        self.scale_factor = scale_factor
        self.up_kernel = up_kernel
        self.up_group = up_group
        self.encoder_kernel = encoder_kernel
        self.encoder_dilation = encoder_dilation
        self.compressed_channels = compressed_channels
        self.channel_compressor = nn.Conv2d(channels, compressed_channels, 1)
        self.content_encoder = nn.Conv2d(
            compressed_channels,
            up_kernel * up_kernel * up_group * scale_factor * scale_factor,
            encoder_kernel,
            padding=int((encoder_kernel - 1) * encoder_dilation / 2),
            dilation=encoder_dilation,
            groups=1,
        )
        self.init_weights()

    def init_weights(self) -> None:
        # mmcv: xavier_init(distribution='uniform') on every conv, then
        # normal_init(content_encoder, std=0.001); biases zero.
        for m in (self.channel_compressor, self.content_encoder):
            nn.init.xavier_uniform_(m.weight, gain=1)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.content_encoder.weight, mean=0, std=0.001)

    def kernel_normalizer(self, mask: Tensor) -> Tensor:
        """(N, s*s*G*k*k, H, W) encoder output -> (N, G*k*k, s*H, s*W) kernels
        that sum to one over each k*k window (softmax), as in mmcv."""
        mask = F.pixel_shuffle(mask, self.scale_factor)
        n, mask_c, h, w = mask.size()
        mask_channel = mask_c // (self.up_kernel**2)
        mask = mask.view(n, mask_channel, -1, h, w)
        mask = F.softmax(mask, dim=2, dtype=mask.dtype)
        return mask.view(n, mask_c, h, w).contiguous()

    def _check_input(self, x) -> None:
        # What forward needs: without this, a 3-D input would run through the
        # convolutions (which take unbatched inputs) and fail in
        # kernel_normalizer with an unpacking error that names nothing.
        if not isinstance(x, Tensor):
            raise TypeError(f"CARAFEPack: x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"CARAFEPack: x must be a 4-D tensor (N, C, H, W) with "
                f"C={self.channels}, got shape {list(x.shape)}"
            )

    def predict_kernels(self, x: Tensor) -> Tensor:
        """The reassembly kernels for x (N, C, H, W): (N, G*k_up*k_up, s*H, s*W)."""
        self._check_input(x)
        return self.kernel_normalizer(self.content_encoder(self.channel_compressor(x)))

    def feature_reassemble(self, x: Tensor, mask: Tensor) -> Tensor:
        return carafe(x, mask, self.up_kernel, self.up_group, self.scale_factor)

    def forward(self, x: Tensor) -> Tensor:
        return self.feature_reassemble(x, self.predict_kernels(x))

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, scale_factor={self.scale_factor}, "
            f"up_kernel={self.up_kernel}, up_group={self.up_group}, "
            f"encoder_kernel={self.encoder_kernel}, "
            f"encoder_dilation={self.encoder_dilation}, "
            f"compressed_channels={self.compressed_channels}"
        )


__all__ = ["CARAFE", "CARAFEPack"]

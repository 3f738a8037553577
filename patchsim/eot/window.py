"""The camera over the differentiable window, as one autograd step.

In the window around the slot (:meth:`patchsim.eot.pipeline.EOT.render`) the patch's warped colours go
through: blending over the clean scene, lit by the slot's light -> exposure, contrast and tone curve ->
haze -> blur -> sensor noise -> clamp to [0, 1] -> JPEG-like (rounding passed straight through). The
derivative of the result with respect to the warped colours is

    M . K . D

with D the product of the pointwise slopes before the blur (the patch's coverage times the light, the
tone curve's slope, the haze transmission), K the blur (a convolution: its transpose is a transposed
convolution with the same kernel) and M where the clamps pass (the final clamp's and the JPEG-like's).
So the forward runs without autograd, in place where it can, keeping only D, M and the kernels, and the
backward is three operations, where autograd through each operation kept about 40 steps and their
intermediate tensors. The values are those of the same transforms applied one by one
(:meth:`EOT._camera <patchsim.eot.pipeline.EOT._camera>`), and so is the gradient (tested).
"""

from __future__ import annotations

import torch

from patchsim.eot import ops


def camera_window(cfg, warped: torch.Tensor, region: torch.Tensor, light: torch.Tensor, cover: torch.Tensor,
                  occ_colour: torch.Tensor, params: dict, pivot: torch.Tensor, origin: torch.Tensor,
                  kernel: torch.Tensor | None = None, curve: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """The patch over windows of the frames, through the camera: (B, 3, h, w) in [0, 1].

    Args:
        cfg: the :class:`~patchsim.eot.pipeline.EOTConfig` (its transforms).
        warped: (B, 3, h + 2r, w + 2r) the patch's colours at the window's pixels (differentiable), with
            r = ``ops.BLUR_RADIUS_PX`` px of context on each side for the blur.
        region, light: (B, 3, h + 2r, w + 2r) the clean scene there in [0, 1] and the slot's light.
        cover: (B, 2, h + 2r, w + 2r) how much of each pixel the patch and the occluder cover.
        occ_colour: (B, 3) the occluders' colours.
        params: the samples' params; pivot: (B,) the clean frames' contrast pivots.
        origin: (B, 2) (x, y) where the result's windows start in the frames (for the sensor noise).
        kernel: (B, k, k) the samples' blur kernels and ``curve`` their tone curves
            (:meth:`~patchsim.eot.transforms.Lighting.curve`), when already made (a reused background keeps them).
    """
    return _CameraWindow.apply(warped, region, light, cover, occ_colour, cfg, params, pivot, origin, kernel, curve)


class _CameraWindow(torch.autograd.Function):
    @staticmethod
    def forward(ctx, warped, region, light, cover, occ_colour, cfg, params, pivot, origin, kernel, curve):
        x = ops.blend(region, light, warped, cover, occ_colour)
        slope = cover[:, 0:1] * (1 - cover[:, 1:2]) * light  # d x / d warped
        x, d = cfg.lighting.apply_slope(x, params["lighting"], pivot, curve)
        slope.mul_(d)
        x = cfg.haze.apply(x, params["haze"])
        slope.mul_(cfg.haze.slope(params["haze"], x))
        if kernel is None:
            kernel = cfg.blur.kernel(params["blur"], x)
        x = ops.convolve(x, kernel, context=True)
        x = cfg.noise.apply(x, params["noise"], origin=origin)  # in place (no autograd in here)
        inside = ops.clamp_mask_(x, 0, 1)
        jpeg_inside = cfg.compression.apply_mask_(x, params["compression"])
        if jpeg_inside is not None:
            inside &= jpeg_inside
        ctx.save_for_backward(slope, inside, kernel)
        return x

    @staticmethod
    def backward(ctx, grad):
        slope, inside, kernel = ctx.saved_tensors
        return (ops.convolve_transposed(grad * inside, kernel).mul_(slope),) + (None,) * 10

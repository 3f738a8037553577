"""Pure, batched, differentiable image operations used by the EOT transforms.

Pixel convention (as in :mod:`patchsim.sim.camera`): pixel ``i`` covers ``[i, i + 1)``; a patch of
``w x h`` pixels spans ``[0, w] x [0, h]`` in its own coordinates, so its corners are
``(0, 0), (w, 0), (w, h), (0, h)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def quad_homography(patch_wh: tuple[int, int], corners: torch.Tensor) -> torch.Tensor:
    """Homographies taking patch coordinates to image coordinates.

    Args:
        patch_wh: (w, h) of the patch in pixels.
        corners: (B, 4, 2) image corners for the patch's top-left, top-right, bottom-right, bottom-left.

    Returns:
        (B, 3, 3) matrices H with ``image ~ H @ [x, y, 1]``.
    """
    from kornia.geometry.transform import get_perspective_transform

    w, h = patch_wh
    src = torch.tensor([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]], dtype=corners.dtype, device=corners.device)
    return get_perspective_transform(src.expand(corners.shape[0], 4, 2).contiguous(), corners)


def patch_grid(H: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, patch_hw: tuple[int, int]) -> torch.Tensor:
    """Where each pixel of an image window falls in the patch: the sampling grid of :func:`sample_patch`.

    Args:
        H: (B, 3, 3) patch -> image homographies.
        xs: (B, S_w) image columns and ys: (B, S_h) image rows of the window's pixels (each row of the
            window is at ``ys[b, i]``, each column at ``xs[b, j]``; pixel centres are at + 0.5).
        patch_hw: (h, w) of the patch in pixels.

    Returns:
        (B, S_h, S_w, 2) normalized patch coordinates (``grid_sample``'s convention, -1..1 across the patch).

    Hand-written: one grid serves the patch's colours and its coverage, for the window only;
    ``bench/bench_ops.py`` (``patch_warp``) measures it faster in forward + backward than kornia's
    ``warp_perspective`` with the same homography, at the same output.
    """
    h, w = patch_hw
    inv = torch.linalg.inv(H)  # image -> patch
    x = (xs.to(H.dtype) + 0.5)[:, None, :]  # (B, 1, S_w)
    y = (ys.to(H.dtype) + 0.5)[:, :, None]  # (B, S_h, 1)

    def row(k: int) -> torch.Tensor:  # (B, S_h, S_w): row k of inv applied to (x, y, 1)
        return inv[:, k, 0, None, None] * x + (inv[:, k, 1, None, None] * y + inv[:, k, 2, None, None])

    z = row(2)
    z = torch.where(z.abs() < 1e-9, 1e-9, z)
    return torch.stack([row(0) / z * (2 / w) - 1, row(1) / z * (2 / h) - 1], -1)


def sample_patch(patch: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(B, C, S_h, S_w): ``patch`` (B or 1, C, h, w) read at ``grid`` (from :func:`patch_grid`), bilinear,
    zero outside the patch."""
    b = grid.shape[0]
    if patch.shape[0] == 1 and b > 1:
        patch = patch.expand(b, -1, -1, -1)
    return F.grid_sample(patch.to(grid.dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def sample_patch_footprint(patch: torch.Tensor, grid: torch.Tensor, levels: int = 6) -> torch.Tensor:
    """(B, C, S_h, S_w): ``patch`` (B or 1, C, h, w) read at ``grid`` (from :func:`patch_grid`), each window
    pixel averaging the patch over its footprint, zero outside the patch.

    Trilinear mipmapping, as a renderer filters a texture: level k is the patch area-averaged down by 2**k;
    each pixel reads the two levels around log2 of its footprint (the longer of the patch-pixel steps one
    window pixel right and one down) and blends them. Where the patch is magnified this is bilinear
    (:func:`sample_patch`); where it is shrunk, a pixel no longer sees only the few texels nearest its
    centre (aliasing a camera does not have, since it integrates light over the pixel).

    Written here because kornia (0.9) has no footprint-filtered read under a homography: its
    ``warp_perspective`` samples one level bilinearly, and its pyramids (``build_pyramid``) blur with a
    Gaussian before each halving, where a renderer's mipmaps are box averages.
    """
    b = grid.shape[0]
    if patch.shape[0] == 1 and b > 1:
        patch = patch.expand(b, -1, -1, -1)
    h, w = patch.shape[-2:]
    with torch.no_grad():
        u, v = grid[..., 0] * (w / 2), grid[..., 1] * (h / 2)

        def step(t: torch.Tensor, dim: int) -> torch.Tensor:  # forward difference, the last one repeated
            d = t.diff(dim=dim)
            return torch.cat([d, d.narrow(dim, d.shape[dim] - 1, 1)], dim) if d.shape[dim] else torch.zeros_like(t)

        footprint = torch.maximum(torch.hypot(step(u, 2), step(v, 2)), torch.hypot(step(u, 1), step(v, 1)))
        lod = torch.log2(footprint.clamp(min=1.0)).clamp(max=levels - 1)
    level = patch.to(grid.dtype)
    out = None
    for k in range(levels):
        if k:
            level = F.adaptive_avg_pool2d(level, (max(1, math.ceil(h / 2 ** k)), max(1, math.ceil(w / 2 ** k))))
        weight = (1 - (lod - k).abs()).clamp(min=0)
        if not bool(weight.any()):
            continue
        part = weight[:, None] * F.grid_sample(level, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = part if out is None else out + part
    return out


PATCH_FILTERS = ("bilinear", "footprint")  # how an image may read the patch (:func:`read_patch`)


def read_patch(colours: torch.Tensor | None, cover: torch.Tensor, grid: torch.Tensor,
               patch_filter: str = "bilinear") -> tuple[torch.Tensor | None, torch.Tensor]:
    """The patch's colours (B or 1, C, h, w; None: no patch) and coverage (B or 1, K, h, w; channel 0 the
    patch's own) read at ``grid`` (from :func:`patch_grid`) as ``patch_filter`` says
    (:class:`~patchsim.eot.pipeline.EOTConfig`): ``bilinear`` (:func:`sample_patch`) or ``footprint``
    (:func:`sample_patch_footprint`). Returns them (B, C, S_h, S_w) and (B, K, S_h, S_w).

    With ``footprint`` the colours are averaged with their coverage (premultiplied), so a pixel over a
    sticker's edge mixes the sticker with what lies around it, not with the transparent texels outside it.
    """
    if patch_filter == "footprint":
        if colours is None:
            return None, sample_patch_footprint(cover, grid)
        # one pass over premultiplied colours and coverage together: the footprints are worked out once
        premultiplied = (colours * cover[:, :1]).to(grid.dtype)
        b = max(premultiplied.shape[0], cover.shape[0])
        read = sample_patch_footprint(torch.cat([premultiplied.expand(b, -1, -1, -1),
                                                 cover.to(grid.dtype).expand(b, -1, -1, -1)], 1), grid)
        c = colours.shape[1]
        covered = read[:, c:]
        return read[:, :c] / covered[:, :1].clamp(min=1e-3), covered
    return (sample_patch(colours, grid) if colours is not None else None), sample_patch(cover, grid)


def blend(region: torch.Tensor, light: torch.Tensor, warped: torch.Tensor | None, cover: torch.Tensor,
           occ_colour: torch.Tensor) -> torch.Tensor:
    """Patch (lit by ``light``) and occluder over ``region``; all (B, ., S, S) and aligned.

    ``warped`` (B, 3, S, S): the patch's colours (None: no patch); ``cover`` (B, 2, S, S): how much of each
    pixel the patch and the occluder cover.
    """
    if warped is not None:
        region = torch.lerp(region, light * warped, cover[:, 0:1])
    return torch.lerp(region, light * occ_colour.to(region)[:, :, None, None], cover[:, 1:2])


def colour_temperature_gains(kelvin_shift: torch.Tensor) -> torch.Tensor:
    """Per-channel white-balance gains (B, 3) for a shift in mired-like units (-1 cool .. +1 warm)."""
    t = kelvin_shift[:, None]
    return torch.cat([1 + 0.12 * t, torch.ones_like(t), 1 - 0.12 * t], 1)


def clamp(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``x.clamp(lo, hi)``, with a backward that is one product with the mask the forward keeps (autograd's
    own compares the input with both bounds again)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return x.clamp(lo, hi)
    return _Clamp.apply(x, lo, hi)


def clamp_mask_(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Clamps ``x`` in place and returns where it was inside [lo, hi] (bool, like ``x``): where a clamp's
    derivative passes."""
    inside = (x >= lo) & (x <= hi)
    x.clamp_(lo, hi)
    return inside


class _Clamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, lo, hi):
        y = x.clamp(lo, hi)
        ctx.save_for_backward(y == x)
        return y

    @staticmethod
    def backward(ctx, grad):
        (inside,) = ctx.saved_tensors
        return grad * inside, None, None


def exposure_gamma(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """``clamp(x * scale + offset, 1e-4, 1) ** gamma`` per image and channel: exposure, contrast and tone curve.

    Args:
        x: (B, C, H, W). scale: (B, C). offset: (B,) or (B, C). gamma: (B,).

    The power is taken as ``exp(gamma log(v))`` (``v >= 1e-4``): the same values to within a float32
    rounding as ``pow`` with a tensor exponent, and faster on the CPU. In place when nothing needs a
    gradient. With gradients, one custom step: the forward keeps the derivative (zero where the clamp
    holds), so the backward is one product instead of a power's and a clamp's backward.

    Hand-written: ``bench/bench_ops.py`` (``exposure_gamma``) measures it faster in forward + backward than
    the affine step followed by kornia's ``adjust_gamma``, at the same output.
    """
    scale, offset, gamma = _exposure_shapes(x, scale, offset, gamma)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return torch.addcmul(offset, x, scale).clamp_(1e-4, 1).log_().mul_(gamma).exp_()
    return _ExposureGamma.apply(x, scale, offset, gamma)


def exposure_gamma_slope(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor,
                         gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`exposure_gamma`'s value and its derivative dy/dx (zero where the clamp holds), both (B, C, H, W),
    without autograd. Arguments as :func:`exposure_gamma`'s."""
    return _exposure_slope(x, *_exposure_shapes(x, scale, offset, gamma))


def _exposure_shapes(x, scale, offset, gamma) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """scale (B, C), offset (B,) or (B, C) and gamma (B,) shaped to broadcast against x (B, C, H, W)."""
    return (scale[..., None, None].to(x), (offset[:, None] if offset.dim() == 1 else offset)[..., None, None].to(x),
            gamma[:, None, None, None].to(x))


@torch.no_grad()
def _exposure_slope(x, scale, offset, gamma) -> tuple[torch.Tensor, torch.Tensor]:
    u = torch.addcmul(offset, x, scale)
    v = u.clamp(1e-4, 1)
    y = v.log().mul_(gamma).exp_()
    return y, (y / v).mul_(gamma * scale).masked_fill_(u != v, 0)


class _ExposureGamma(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, offset, gamma):
        y, d = _exposure_slope(x, scale, offset, gamma)
        ctx.save_for_backward(d)
        return y

    @staticmethod
    def backward(ctx, grad):
        (d,) = ctx.saved_tensors
        return grad * d, None, None, None


def _dct_matrix(device, dtype) -> torch.Tensor:
    """(8, 8) orthonormal DCT-II matrix (computed in float64; cached with the other JPEG constants)."""
    n = torch.arange(8, dtype=torch.float64)
    m = torch.cos(math.pi * (2 * n[None] + 1) * n[:, None] / 16) * math.sqrt(2 / 8)
    m[0] = m[0] / math.sqrt(2)
    return m.to(device=device, dtype=dtype)


# JPEG Annex K tables
_QY = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29,
       51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92, 49, 64, 78, 87, 103, 121,
       120, 101, 72, 92, 95, 98, 112, 100, 103, 99]
_QC = [17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99,
       99, 99, 99, 99] + [99] * 32


def _quality_scale(quality: torch.Tensor) -> torch.Tensor:
    q = quality.clamp(1, 100)
    return torch.where(q < 50, 5000 / q, 200 - 2 * q) / 100


def jpeg_like(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-like compression: YCbCr, 8x8 DCT, quantization, inverse; the result clamped to [0, 1].

    Differentiable with the rounding passed straight through (BPDA), which makes the round trip's
    gradient the identity inside [0, 1] (:class:`_JpegStraightThrough`). Chroma is quantized with the
    chroma table, without subsampling. Sides that are not multiples of 8 are padded by replication.
    The 2-D DCT of every block is one matrix product with the 64 x 64 Kronecker DCT matrix, with each
    image's quantization table folded into it (and back out in the inverse).

    Hand-written: ``bench/bench_ops.py`` measured kornia's ``jpeg_codec_differentiable`` at 13-16x its
    forward + backward time (batch 12, 256 px). kornia's is the closer model of a real codec (mean
    absolute error against OpenCV's JPEG 0.007 against 0.024), at a cost the optimizer cannot pay.

    Args:
        images: (B, 3, H, W) in [0, 1]. quality: (B,) JPEG quality 1..100.
    """
    return _JpegStraightThrough.apply(images, quality)


_JPEG_CONSTANTS: dict = {}


def _jpeg_constants(device, dtype) -> tuple[torch.Tensor, ...]:
    """(to YCbCr x 255, from YCbCr / 255, level shift (3,), Kronecker DCT (64, 64), base tables (3, 64)), cached."""
    key = (str(device), dtype)
    if key not in _JPEG_CONSTANTS:
        def t(v):
            return torch.tensor(v, dtype=dtype, device=device)
        to_ycc = t([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]]) * 255
        from_ycc = t([[1.0, 0.0, 1.402], [1.0, -0.344136, -0.714136], [1.0, 1.772, 0.0]]) / 255
        d = _dct_matrix(device, dtype)
        # vec(D X D^T) = (D kron D) vec(X)
        _JPEG_CONSTANTS[key] = (to_ycc, from_ycc, t([127.5, 0.0, 0.0]), torch.kron(d, d), torch.stack([t(_QY), t(_QC), t(_QC)]))
    return _JPEG_CONSTANTS[key]


@torch.no_grad()
def jpeg_round_trip(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """JPEG-like round trip of (B, 3, H, W) images in [0, 1], before the final clamp (no autograd; see
    :func:`jpeg_like`)."""
    b, _, h, w = images.shape
    ph, pw = (-h) % 8, (-w) % 8
    x = F.pad(images, (0, pw, 0, ph), mode="replicate") if ph or pw else images
    to_ycc, from_ycc, shift, kron, base = _jpeg_constants(images.device, images.dtype)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x) - shift[:, None, None]
    H, W = ycc.shape[-2:]
    blocks = ycc.reshape(b, 3, H // 8, 8, W // 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, 3, -1, 64)
    scale = _quality_scale(quality.to(images.dtype)).reshape(b, 1, 1)
    table = (base[None] * scale).clamp(min=1)  # (B, 3, 64)
    q = torch.round(blocks @ (kron.T / table[:, :, None, :]))  # quantized DCT coefficients
    rec = q @ (table[..., None] * kron)
    rec = rec.reshape(b, 3, H // 8, W // 8, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(b, 3, H, W)
    rec = rec + shift[:, None, None]
    return torch.einsum("ij,bjhw->bihw", from_ycc, rec)[..., :h, :w]


class _JpegStraightThrough(torch.autograd.Function):
    """JPEG-like forward; the backward passes the gradient straight through, inside [0, 1].

    With the rounding taken as the identity (BPDA), the round trip is linear and its Jacobian is the
    identity: the DCT is orthonormal (K^T K = I), each quantization table divides and multiplies back,
    and the two colour matrices are each other's inverse. So the backward is the final clamp's mask
    alone, with no graph of blocks, matrix products and colour transforms to keep or run.
    """

    @staticmethod
    def forward(ctx, images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
        out = jpeg_round_trip(images, quality)
        if not ctx.needs_input_grad[0]:
            return out.clamp_(0, 1)
        ctx.save_for_backward(clamp_mask_(out, 0, 1))
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inside,) = ctx.saved_tensors
        return grad * inside, None


#: kernel taps below this share of the kernel's largest are set to zero. Narrow Gaussians otherwise have
#: taps (and products of taps) in float32's subnormal range, and the CPU multiplies subnormals tens of
#: times slower: a blur with sigma near 0.07 or 0.2 px took 2-2.5x as long as one with sigma 0.5.
KERNEL_FLOOR = 1e-12


def flush_tiny(kernel: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """``kernel`` with taps below ``KERNEL_FLOOR`` x its maximum over ``dims`` set to zero."""
    return torch.where(kernel >= KERNEL_FLOOR * kernel.amax(dim=dims, keepdim=True), kernel, 0.0)


def gaussian_kernel1d(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2r+1) normalized Gaussian kernels; sigma (B,) in pixels (0 gives a delta).

    kornia's ``get_gaussian_kernel1d``, with the taps below ``KERNEL_FLOOR`` of the peak zeroed so
    that a sigma near 0 is an exact delta (``bench/bench_ops.py``: within 6e-8 of the former
    hand-written kernels).
    """
    from kornia.filters import get_gaussian_kernel1d

    k = get_gaussian_kernel1d(2 * radius + 1, sigma.clamp(min=1e-3)[:, None], device=sigma.device, dtype=sigma.dtype)
    k = flush_tiny(k, (1,))
    return k / k.sum(1, keepdim=True)


#: the blur kernels reach this far (their size is 2 r + 1)
BLUR_RADIUS_PX = 3


def blur(images: torch.Tensor, sigma: torch.Tensor, motion_px: torch.Tensor, motion_angle_rad: torch.Tensor,
         radius: int = BLUR_RADIUS_PX, context: bool = False) -> torch.Tensor:
    """Defocus (Gaussian, ``sigma`` px) and linear motion blur (``motion_px`` long at an angle), per image.

    Builds one (2r+1)^2 kernel per image (:func:`blur_kernel`) and applies it as a grouped convolution
    (:func:`convolve`). The image edges are padded by replication, unless ``context``: then ``images``
    carry ``radius`` px of context on each side and the result is the interior, ``radius`` px smaller on
    each side.
    """
    return convolve(images, blur_kernel(sigma, motion_px, motion_angle_rad, radius).to(images.dtype), context)


def blur_kernel(sigma: torch.Tensor, motion_px: torch.Tensor | None, motion_angle_rad: torch.Tensor,
                radius: int = BLUR_RADIUS_PX) -> torch.Tensor:
    """(B, 2r+1, 2r+1) normalized kernels: defocus (Gaussian, ``sigma`` (B,) px) and, where ``motion_px`` (B,)
    is above 0, linear motion blur that long at ``motion_angle_rad`` (B,)."""
    b = sigma.shape[0]
    g = gaussian_kernel1d(sigma, radius)
    kernel = flush_tiny(g[:, :, None] * g[:, None, :], (1, 2))  # (B, k, k)
    if motion_px is not None and bool((motion_px > 0).any()):
        still = kernel
        x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
        yy, xx = torch.meshgrid(x, x, indexing="ij")
        ca, sa = torch.cos(motion_angle_rad)[:, None, None], torch.sin(motion_angle_rad)[:, None, None]
        along = xx[None] * ca + yy[None] * sa
        across = -xx[None] * sa + yy[None] * ca
        half = (motion_px / 2).clamp(min=0.5)[:, None, None]
        line = torch.exp(-0.5 * (across / 0.5) ** 2) * torch.sigmoid((half - along.abs()) * 4)
        line = flush_tiny(line, (1, 2))
        line = line / line.sum((1, 2), keepdim=True)
        # convolve the two kernels (small, done with conv2d on the kernel itself)
        kernel = F.conv2d(kernel[None], line[:, None].flip(-1, -2), padding=radius, groups=b)[0]
        kernel = flush_tiny(kernel, (1, 2))
        kernel = kernel / kernel.sum((1, 2), keepdim=True)
        kernel = torch.where((motion_px > 0)[:, None, None], kernel, still)  # a still image stays unsmeared
    return kernel


def convolve(images: torch.Tensor, kernel: torch.Tensor, context: bool = False) -> torch.Tensor:
    """(B, C, H, W) ``images`` each convolved with its own (B, k, k) ``kernel`` (the same for every channel).
    Edges padded by replication, or, with ``context``, the images carry (k - 1) / 2 px of context on each
    side and the result is that much smaller on each side.

    kornia's ``filter2d``: ``bench/bench_ops.py`` measured it at the same output as the grouped
    channels-last convolution patchsim had, and 0.74-0.97x its time (256-512 px windows, batch 12,
    repeated runs).
    """
    from kornia.filters import filter2d

    return filter2d(images, kernel, border_type="replicate", padding="valid" if context else "same")


def convolve_transposed(grad: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`convolve` with ``context``: (B, C, h, w) ``grad`` of its result -> (B, C, h + k - 1,
    w + k - 1), the gradient of its input. Hand-written: kornia has no transposed filter; the fused EOT
    backward (``eot/window.py``) calls it instead of autograd."""
    b, c, h, w = grad.shape
    k = kernel.shape[-1]
    g = _to_channels_last(grad.reshape(1, b * c, h, w))
    x = F.conv_transpose2d(g, _depthwise_weight(kernel, c), groups=b * c)
    return _from_channels_last(x).reshape(b, c, h + k - 1, w + k - 1)


def _depthwise_weight(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """(B * C, 1, k, k) channels-last weight of a grouped convolution: each image's kernel for each channel."""
    return kernel[:, None].repeat_interleave(channels, 0).contiguous(memory_format=torch.channels_last)


#: planes of at least this many pixels change memory layout in blocks of this many pixels
LAYOUT_BLOCK_PX = 2048


def _to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) ``x`` in channels-last memory (same values)."""
    return _relayout(x, to_channels_last=True)


def _from_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(1, C, H, W) channels-last ``x`` in contiguous memory (same values)."""
    return _relayout(x, to_channels_last=False)


def _relayout(x: torch.Tensor, to_channels_last: bool) -> torch.Tensor:
    """Changes the memory layout of (1, C, H, W) ``x``. Large planes are transposed a block of pixels at a
    time: on the CPU, ``contiguous()`` of 36 channels of 256 x 256 took 2.4 ms to channels-last and 5.2 ms
    back, in blocks 1.8-2.3 ms each way (the blocks stay in cache). Small planes (windows) take
    ``contiguous()``, faster there, and so do tensors that need gradients (one autograd step, not one a
    block)."""
    fmt = torch.channels_last if to_channels_last else torch.contiguous_format
    _, c, h, w = x.shape
    if x.is_contiguous(memory_format=fmt) or h * w < 4 * LAYOUT_BLOCK_PX or x.shape[0] != 1 or (
            torch.is_grad_enabled() and x.requires_grad):
        return x.contiguous(memory_format=fmt)
    out = torch.empty_like(x, memory_format=fmt)
    hwc, chw = (out, x) if to_channels_last else (x, out)
    pixels = hwc.permute(0, 2, 3, 1).reshape(h * w, c)  # views: channels-last memory as (pixels, C)
    planes = chw.reshape(c, h * w)
    for i in range(0, h * w, LAYOUT_BLOCK_PX):
        if to_channels_last:
            pixels[i:i + LAYOUT_BLOCK_PX] = planes[:, i:i + LAYOUT_BLOCK_PX].t()
        else:
            planes[:, i:i + LAYOUT_BLOCK_PX] = pixels[i:i + LAYOUT_BLOCK_PX].t()
    return out

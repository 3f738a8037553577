"""Hand-written EOT ops against their kornia counterparts: output difference, and time of forward +
backward on the same inputs, interleaved (the two alternate in every repeat). patchsim uses kornia's
op where it is as fast at the same output; the hand-written blur and Gaussian kernels it had are
kept here as the baselines.

    python bench/bench_ops.py [--batch 12] [--size 256] [--repeats 30]

Pairs (patchsim op -> kornia op):
- blur convolution, one kernel per image, replicated edges: ``eot.ops.convolve`` ->
  ``kornia.filters.filter2d(border_type="replicate")``; and with context (the EOT's path: the
  window carries the kernel's reach, the result is its interior) -> ``filter2d(padding="valid")``;
- Gaussian kernels, one sigma per image: ``eot.ops.gaussian_kernel1d`` ->
  ``kornia.filters.get_gaussian_kernel1d``;
- the patch's warp into the window (colours and coverage, one grid for both):
  ``eot.ops.patch_grid`` + ``eot.ops.sample_patch`` -> ``kornia.geometry.transform.warp_perspective``
  (the same homography in kornia's pixel-centre convention);
- exposure, contrast and tone curve: ``eot.ops.exposure_gamma`` -> ``clamp(x * scale + offset)`` then
  ``kornia.enhance.adjust_gamma``;
- JPEG: ``eot.ops.jpeg_like`` (straight-through rounding) -> ``kornia.enhance.jpeg_codec_differentiable``
  (a differentiable rounding approximation, chroma subsampled): another model of JPEG, so their
  outputs are compared with the real codec (OpenCV) rather than with each other.

Prints one JSON object: per pair, the medians in ms, the ratio kornia / patchsim, and the largest
output difference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _fwd_bwd(fn, x: torch.Tensor) -> float:
    x = x.detach().clone().requires_grad_(True)
    t0 = time.perf_counter()
    fn(x).square().mean().backward()
    return time.perf_counter() - t0


def _interleaved(fns: dict, x: torch.Tensor, repeats: int) -> dict[str, float]:
    times = {k: [] for k in fns}
    for _ in range(2):  # warm-up
        for f in fns.values():
            _fwd_bwd(f, x)
    for _ in range(repeats):
        for k, f in fns.items():
            times[k].append(_fwd_bwd(f, x))
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def _same_output_pair(ours, kornia, x: torch.Tensor, repeats: int) -> dict:
    """Medians of both ops' forward + backward (interleaved), their ratio, and the largest output difference."""
    with torch.no_grad():
        diff = (ours(x) - kornia(x)).abs().max().item()
    t = _interleaved({"patchsim": ours, "kornia": kornia}, x, repeats)
    return {"patchsim_ms": round(t["patchsim"], 2), "kornia_ms": round(t["kornia"], 2),
            "kornia_over_patchsim": round(t["kornia"] / t["patchsim"], 2), "largest_output_difference": diff}


def hand_written_convolve(images: torch.Tensor, kernel: torch.Tensor, context: bool = False) -> torch.Tensor:
    """The grouped channels-last convolution patchsim used before kornia's ``filter2d``: the baseline."""
    import torch.nn.functional as F

    from patchsim.eot.ops import _depthwise_weight, _from_channels_last, _to_channels_last

    b, c, h, w = images.shape
    radius = kernel.shape[-1] // 2
    x = _to_channels_last(images.reshape(1, b * c, h, w))
    if context:
        h, w = h - 2 * radius, w - 2 * radius
    else:
        x = F.pad(x, (radius,) * 4, mode="replicate")
    y = F.conv2d(x, _depthwise_weight(kernel, c), groups=b * c)
    return _from_channels_last(y).reshape(b, c, h, w)


def hand_written_gaussian(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """The Gaussian kernels patchsim built itself before kornia's: the baseline."""
    from patchsim.eot.ops import flush_tiny

    x = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = flush_tiny(torch.exp(-0.5 * (x[None] / sigma.clamp(min=1e-3)[:, None]) ** 2), (1,))
    return k / k.sum(1, keepdim=True)


def _warp_pair(b: int, window: int, repeats: int, gen: torch.Generator) -> dict:
    """A 96 px patch (colours + coverage) warped into a ``window`` px window by random perspective quads."""
    from kornia.geometry.transform import warp_perspective

    from patchsim.eot.ops import patch_grid, quad_homography, sample_patch

    h = w = 96
    x0 = torch.randint(0, 500, (b,), generator=gen).float()  # the window's place in the frame
    y0 = torch.randint(0, 300, (b,), generator=gen).float()
    square = torch.tensor([[0.2, 0.2], [0.8, 0.2], [0.8, 0.8], [0.2, 0.8]]) * window
    corners = square + torch.randn(b, 4, 2, generator=gen) * window * 0.05 + torch.stack([x0, y0], 1)[:, None]
    H = quad_homography((w, h), corners)  # patch -> frame, pixel i spanning [i, i + 1)
    xs = x0[:, None] + torch.arange(window)
    ys = y0[:, None] + torch.arange(window)
    # kornia: pixel centres at integer coordinates, the window's origin at (x0, y0)
    to_window = torch.eye(3).repeat(b, 1, 1)
    to_window[:, 0, 2], to_window[:, 1, 2] = -x0 - 0.5, -y0 - 0.5
    from_centres = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])
    M = to_window @ H @ from_centres
    patch = torch.rand(b, 4, h, w, generator=gen)
    return _same_output_pair(lambda p: sample_patch(p, patch_grid(H, xs, ys, (h, w))),
                             lambda p: warp_perspective(p, M, (window, window), mode="bilinear",
                                                        padding_mode="zeros", align_corners=True),
                             patch, repeats)


def _exposure_pair(x: torch.Tensor, repeats: int, gen: torch.Generator) -> dict:
    from kornia.enhance import adjust_gamma

    from patchsim.eot.ops import exposure_gamma

    b = x.shape[0]
    scale = 0.6 + 0.8 * torch.rand(b, 3, generator=gen)
    offset = 0.1 * torch.rand(b, generator=gen) - 0.05
    gamma = 0.8 + 0.4 * torch.rand(b, generator=gen)
    kornia = lambda t: adjust_gamma(torch.addcmul(offset[:, None, None, None], t, scale[:, :, None, None])  # noqa: E731
                                    .clamp(1e-4, 1), gamma)
    return _same_output_pair(lambda t: exposure_gamma(t, scale, offset, gamma), kornia, x, repeats)


def _opencv_jpeg(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    import cv2
    import numpy as np

    out = []
    for img, q in zip(images, quality):
        rgb = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(q)])
        dec = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out.append(torch.from_numpy(dec).permute(2, 0, 1).float() / 255)
    return torch.stack(out)


def main() -> None:
    from kornia.enhance import jpeg_codec_differentiable
    from kornia.filters import filter2d, get_gaussian_kernel1d

    from patchsim.eot.ops import BLUR_RADIUS_PX, blur_kernel, jpeg_like

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--size", type=int, default=256, help="square window side in px (the EOT's default crop)")
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    b, s = args.batch, args.size
    # smooth images with edges, like rendered frames (pure noise would flatter no one)
    x = torch.nn.functional.interpolate(torch.rand(b, 3, s // 8, s // 8, generator=gen), size=(s, s),
                                        mode="bilinear", align_corners=False)
    sigma = torch.rand(b, generator=gen) * 1.5
    motion = torch.rand(b, generator=gen) * 4
    angle = torch.rand(b, generator=gen) * 3.1416
    kernel = blur_kernel(sigma, motion, angle, BLUR_RADIUS_PX)

    out: dict = {"batch": b, "size_px": s, "repeats": args.repeats}

    out["blur_convolution"] = _same_output_pair(lambda t: hand_written_convolve(t, kernel),
                                                lambda t: filter2d(t, kernel, border_type="replicate"), x, args.repeats)
    # the EOT's path: the window carries the kernel's reach of context, the result is the interior
    out["blur_convolution_with_context"] = _same_output_pair(lambda t: hand_written_convolve(t, kernel, context=True),
                                                             lambda t: filter2d(t, kernel, padding="valid"), x,
                                                             args.repeats)

    out["patch_warp"] = _warp_pair(b, s, args.repeats, gen)
    out["exposure_gamma"] = _exposure_pair(x, args.repeats, gen)

    k = 2 * BLUR_RADIUS_PX + 1
    ours_k = hand_written_gaussian(sigma, BLUR_RADIUS_PX)
    kornia_k = get_gaussian_kernel1d(k, sigma.clamp(min=1e-3)[:, None])
    out["gaussian_kernel"] = {"largest_difference": (ours_k - kornia_k).abs().max().item(),
                              "note": "patchsim zeroes taps below 1e-12 of the peak (exact deltas at sigma ~0)"}

    quality = torch.randint(30, 96, (b,), generator=gen).float()
    ours_jpeg = lambda t: jpeg_like(t, quality)  # noqa: E731
    kornia_jpeg = lambda t: jpeg_codec_differentiable(t, quality)  # noqa: E731
    with torch.no_grad():
        real = _opencv_jpeg(x, quality)
        ours_err = (ours_jpeg(x) - real).abs().mean().item()
        kornia_err = (kornia_jpeg(x) - real).abs().mean().item()
    t = _interleaved({"patchsim": ours_jpeg, "kornia": kornia_jpeg}, x, args.repeats)
    out["jpeg"] = {"patchsim_ms": round(t["patchsim"], 2), "kornia_ms": round(t["kornia"], 2),
                   "kornia_over_patchsim": round(t["kornia"] / t["patchsim"], 2),
                   "patchsim_mean_abs_error_vs_opencv": round(ours_err, 5),
                   "kornia_mean_abs_error_vs_opencv": round(kornia_err, 5)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()

"""EOT transforms: each samples its random parameters apart from applying them.

Every transform has ``sample(batch, generator, context) -> dict[str, Tensor]`` and
``apply(x, params) -> x``. Parameters come from a seeded ``torch.Generator`` on the CPU and are
kept, so any sample can be stored (:func:`params_to_json`) and replayed exactly. All applications
are differentiable with respect to the image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from patchsim.config import FieldError, param
from patchsim.eot import ops


def ordered(obj: Any, *names: str) -> None:
    """Each named [low, high] pair must have low <= high (a FieldError naming the key)."""
    for name in names:
        lo, hi = getattr(obj, name)
        if lo > hi:
            raise FieldError(name, f"[{lo}, {hi}]: low is above high")


def _uniform(gen: torch.Generator, b: int, lo_hi: tuple[float, float]) -> torch.Tensor:
    lo, hi = lo_hi
    return lo + (hi - lo) * torch.rand(b, generator=gen)


def _bernoulli(gen: torch.Generator, b: int, p: float) -> torch.Tensor:
    return (torch.rand(b, generator=gen) < p).float()


@dataclass
class Placement:
    """Placement error of the printed patch on its slot: scale, in-plane rotation, tilt, corner noise.

    Distance and viewing angle come from the scene frames (and their randomization); the sign
    itself does not move here, so this stays at the size of a hand-applied sticker's error.
    Applied by the pipeline (it sets the homography), not to pixels.
    """

    scale: tuple[float, float] = param((0.97, 1.03), range=(0.5, 2.0), help="patch size relative to the slot [low, high]")
    rotation_deg: float = param(2.0, unit="deg", range=(0.0, 90.0), help="in-plane rotation, up to +- this")
    tilt: float = param(0.02, range=(0.0, 0.5), help="out-of-plane tilt (keystone), up to +- this share")
    corner_noise: float = param(0.006, range=(0.0, 0.2), help="std of corner jitter, as a share of the quad's diagonal")

    def __post_init__(self) -> None:
        ordered(self, "scale")

    def sample(self, b: int, gen: torch.Generator, corners: torch.Tensor) -> dict[str, torch.Tensor]:
        centre = corners.mean(1, keepdim=True)
        diag = (corners[:, 2] - corners[:, 0]).norm(dim=-1).clamp(min=1.0)[:, None, None]
        s = _uniform(gen, b, self.scale)[:, None, None]
        a = torch.deg2rad(_uniform(gen, b, (-self.rotation_deg, self.rotation_deg)))
        rot = torch.stack([torch.stack([a.cos(), -a.sin()], -1), torch.stack([a.sin(), a.cos()], -1)], -2)
        rel = (corners - centre) * s
        tilt = _uniform(gen, b, (-self.tilt, self.tilt))[:, None]
        side = torch.sign(rel[..., 0])  # left corners shrink vertically, right ones grow (or the reverse)
        rel = torch.stack([rel[..., 0], rel[..., 1] * (1 + tilt * side)], -1)
        rel = torch.einsum("bij,bkj->bki", rot, rel)
        noise = torch.randn(corners.shape, generator=gen) * self.corner_noise * diag
        return {"corners": centre + rel + noise}


@dataclass
class PrinterError:
    """Print-to-print colour error on top of the printer profile: per-channel gain and offset."""

    gain_std: float = param(0.04, range=(0.0, 1.0), help="std of the per-channel gain around 1")
    offset_std: float = param(0.02, range=(0.0, 1.0), help="std of the per-channel offset")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"gain": 1 + torch.randn(b, 3, generator=gen) * self.gain_std,
                "offset": torch.randn(b, 3, generator=gen) * self.offset_std}

    def apply(self, rgb: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """rgb: (B, 3, h, w) seen patch colours."""
        return ops.clamp(torch.addcmul(p["offset"][..., None, None], rgb, p["gain"][..., None, None]), 0, 1)


@dataclass
class Occlusion:
    """A flat-coloured occluder (leaf, dirt, a pole) over part of the slot, with probability ``p``."""

    p: float = param(0.2, range=(0.0, 1.0), help="probability of an occluder")
    max_area: float = param(0.12, range=(0.0, 1.0), help="largest occluded share of the slot")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        area = _uniform(gen, b, (0.02, self.max_area))
        aspect = torch.exp(_uniform(gen, b, (-1.0, 1.0)))
        w = (area * aspect).sqrt().clamp(max=0.9)
        h = (area / aspect).sqrt().clamp(max=0.9)
        x0 = torch.rand(b, generator=gen) * (1 - w)
        y0 = torch.rand(b, generator=gen) * (1 - h)
        palette = torch.tensor([[0.16, 0.25, 0.1], [0.3, 0.22, 0.15], [0.45, 0.45, 0.45], [0.1, 0.1, 0.1]])
        colour = palette[torch.randint(0, 4, (b,), generator=gen)]
        return {"on": _bernoulli(gen, b, self.p), "rect": torch.stack([x0, y0, x0 + w, y0 + h], 1), "colour": colour}

    @staticmethod
    def alpha(p: dict[str, torch.Tensor], hw: tuple[int, int], device) -> torch.Tensor:
        """(B, 1, h, w) occluder coverage in slot coordinates."""
        h, w = hw
        ys = (torch.arange(h, device=device) + 0.5) / h
        xs = (torch.arange(w, device=device) + 0.5) / w
        r = p["rect"].to(device)
        inside_x = ((xs[None] >= r[:, 0:1]) & (xs[None] < r[:, 2:3])).float()  # (B, w)
        inside_y = ((ys[None] >= r[:, 1:2]) & (ys[None] < r[:, 3:4])).float() * p["on"].to(device)[:, None]
        return (inside_y[:, :, None] * inside_x[:, None, :])[:, None]  # one pass over (B, h, w)


@dataclass
class Lighting:
    """Exposure (brightness gain), contrast, gamma and colour temperature of the whole frame."""

    brightness: tuple[float, float] = param((0.7, 1.3), range=(0.01, 10.0), help="exposure gain [low, high]")
    contrast: tuple[float, float] = param((0.8, 1.2), range=(0.01, 10.0), help="contrast around the mean [low, high]")
    gamma: tuple[float, float] = param((0.8, 1.25), range=(0.1, 10.0), help="gamma [low, high], drawn log-uniformly")
    temperature: tuple[float, float] = param((-1.0, 1.0), range=(-5.0, 5.0), help="white balance shift [low, high]")

    def __post_init__(self) -> None:
        ordered(self, "brightness", "contrast", "gamma", "temperature")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"brightness": _uniform(gen, b, self.brightness), "contrast": _uniform(gen, b, self.contrast),
                "gamma": torch.exp(_uniform(gen, b, (math.log(self.gamma[0]), math.log(self.gamma[1])))),
                "temperature": _uniform(gen, b, self.temperature)}

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor], mean: torch.Tensor | None = None,
              curve: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """``mean`` (B,) is the image mean contrast pivots on; by default this image's own. ``curve``:
        :meth:`curve`'s, when already worked out."""
        return ops.exposure_gamma(x, *(curve if curve is not None else self.curve(x, p, mean)))

    def apply_slope(self, x: torch.Tensor, p: dict[str, torch.Tensor], mean: torch.Tensor,
                    curve: tuple[torch.Tensor, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`apply`'s result and its derivative with respect to ``x`` (both like ``x``), without autograd."""
        return ops.exposure_gamma_slope(x, *(curve if curve is not None else self.curve(x, p, mean)))

    def curve(self, x: torch.Tensor, p: dict[str, torch.Tensor],
              mean: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(scale (B, 3), offset (B,), gamma (B,)) in ``x``'s dtype: ((x g - m) c + m) as one affine map per
        channel, then the tone curve."""
        gain = self._gain(p, x)
        if mean is None:
            mean = (x.mean(dim=(2, 3)) * gain).mean(1)
        c = p["contrast"].to(x)
        return gain * c[:, None], mean.to(x) * (1 - c), p["gamma"].to(x)

    def pivot(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B,) the mean the contrast change pivots on."""
        return (x.mean(dim=(2, 3)) * self._gain(p, x)).mean(1)

    @staticmethod
    def _gain(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(B, 3) per-channel gain: white balance times brightness, in ``x``'s dtype."""
        return ops.colour_temperature_gains(p["temperature"].to(x)) * p["brightness"].to(x)[:, None]


@dataclass
class Haze:
    """Atmospheric haze with probability ``p``: ``x t + A (1 - t)``, t from visibility and the slot's distance."""

    p: float = param(0.25, range=(0.0, 1.0), help="probability of haze")
    visibility_m: tuple[float, float] = param((120.0, 1500.0), unit="m", range=(1.0, 1e6),
                                              help="meteorological visibility [low, high], drawn log-uniformly")

    def __post_init__(self) -> None:
        ordered(self, "visibility_m")

    def sample(self, b: int, gen: torch.Generator, distance_m: torch.Tensor) -> dict[str, torch.Tensor]:
        vis = torch.exp(_uniform(gen, b, (math.log(self.visibility_m[0]), math.log(self.visibility_m[1]))))
        t = torch.exp(-3.912 * distance_m.cpu() / vis)
        on = _bernoulli(gen, b, self.p)
        airlight = 0.7 + 0.25 * torch.rand(b, 1, generator=gen) + 0.03 * torch.randn(b, 3, generator=gen)
        return {"transmission": torch.where(on > 0, t, torch.ones_like(t)), "airlight": airlight.clamp(0, 1)}

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        t = self.slope(p, x)
        return torch.addcmul(p["airlight"].to(x)[..., None, None] * (1 - t), x, t)

    @staticmethod
    def slope(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(B, 1, 1, 1) the derivative of :meth:`apply` with respect to ``x``: the transmission."""
        return p["transmission"].to(x)[:, None, None, None]


@dataclass
class Blur:
    """Defocus (Gaussian sigma, px) and, with probability ``motion_p``, linear motion blur."""

    sigma_px: tuple[float, float] = param((0.0, 1.2), unit="px", range=(0.0, 20.0), help="defocus sigma [low, high]")
    motion_p: float = param(0.3, range=(0.0, 1.0), help="probability of motion blur")
    motion_px: tuple[float, float] = param((1.0, 5.0), unit="px", range=(1.0, 50.0), help="motion blur length [low, high]")

    def __post_init__(self) -> None:
        ordered(self, "sigma_px", "motion_px")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        on = _bernoulli(gen, b, self.motion_p)
        return {"sigma": _uniform(gen, b, self.sigma_px), "motion_px": _uniform(gen, b, self.motion_px) * on,
                "motion_angle": _uniform(gen, b, (0.0, math.pi))}

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor], context: bool = False,
              kernel: torch.Tensor | None = None) -> torch.Tensor:
        """One (2r+1)^2 kernel per sample, defocus and (when moving) motion: a single grouped convolution.
        On the CPU this beat splitting the batch into still samples (separable blur) and moving ones, by
        2.2x on 48 frames of 256 px and 1.5x forward + backward on 12 windows of 96 px. ``context``: ``x``
        carries ``ops.BLUR_RADIUS_PX`` px of context on each side, used instead of padding and cut off.
        ``kernel``: :meth:`kernel`'s, when already made."""
        return ops.convolve(x, kernel if kernel is not None else self.kernel(p, x), context=context)

    @staticmethod
    def kernel(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """(B, k, k) each sample's blur kernel, in ``x``'s dtype and device."""
        return ops.blur_kernel(p["sigma"].to(x), p["motion_px"].to(x), p["motion_angle"].to(x)).to(x.dtype)


NOISE_TILE_PX = 1024
_NOISE_TILES: dict[str, torch.Tensor] = {}


def noise_tiles(device: torch.device | str) -> torch.Tensor:
    """Two fixed (3, 1024, 1024) tiles of zero-mean, unit-variance uniform noise (seed 0), made once."""
    key = str(device)
    if key not in _NOISE_TILES:
        u = torch.rand((2, 3, NOISE_TILE_PX, NOISE_TILE_PX), generator=torch.Generator().manual_seed(0))
        _NOISE_TILES[key] = ((u - 0.5) * 12 ** 0.5).to(device)
    return _NOISE_TILES[key]


@dataclass
class SensorNoise:
    """Sensor noise with a per-sample std. Each sample's noise is a window of a fixed noise tile at a
    sampled offset, so it is replayable and cheap (drawing fresh random numbers costs more than the
    rest of the camera model). Uniform rather than Gaussian: read noise summed with quantization is
    no more Gaussian than this. Frames over 896 px a side see the tile repeat."""

    std: tuple[float, float] = param((0.0, 0.03), range=(0.0, 0.5), help="noise std in [0, 1] units [low, high]")

    def __post_init__(self) -> None:
        ordered(self, "std")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"std": _uniform(gen, b, self.std), "tile": torch.randint(0, 2, (b,), generator=gen),
                "offset": torch.randint(0, NOISE_TILE_PX - 896, (b, 2), generator=gen)}

    @staticmethod
    def noise(p: dict[str, torch.Tensor], shape: tuple[int, int, int], device,
              origin: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) noise of each sample's frame, the same whatever batch the sample is in.

        ``origin`` (B, 2) (x, y): the noise of windows of the frames starting there instead.
        """
        return torch.stack(SensorNoise._windows(p, shape, device, origin))

    @staticmethod
    def _windows(p: dict[str, torch.Tensor], shape: tuple[int, int, int], device,
                 origin: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each sample's (C, H, W) noise, as views of the tiles."""
        c, h, w = shape
        tiles = noise_tiles(device)
        starts = origin.tolist() if origin is not None else [(0, 0)] * len(p["tile"])  # (x, y) in the frame
        reach_y, reach_x = h + max(y for _, y in starts), w + max(x for x, _ in starts)
        if max(reach_y, reach_x) > 896:  # larger frames: the tile repeats (every 1024 px)
            reps = (1, 1, (reach_y + 895) // NOISE_TILE_PX + 1, (reach_x + 895) // NOISE_TILE_PX + 1)
            tiles = tiles.repeat(*reps)
        return [tiles[t, :c, oy + y:oy + y + h, ox + x:ox + x + w]
                for t, (ox, oy), (x, y) in zip(p["tile"].tolist(), p["offset"].tolist(), starts)]

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor], origin: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (B, C, H, W) with each sample's noise added: its frame's noise, or with ``origin`` (B, 2) (x, y)
        that of the windows of the frames starting there (:meth:`noise`). When nothing needs a gradient, ``x``
        is changed in place, a sample at a time (no (B, C, H, W) stack of noise to build)."""
        if torch.is_grad_enabled() and x.requires_grad:
            noise = self.noise(p, tuple(x.shape[1:]), x.device, origin)
            return torch.addcmul(x, noise.to(x), p["std"].to(x)[:, None, None, None])
        for xi, n, std in zip(x, self._windows(p, tuple(x.shape[1:]), x.device, origin), p["std"].tolist()):
            xi.add_(n.to(x), alpha=std)
        return x


@dataclass
class Compression:
    """JPEG-like compression with probability ``p`` at a quality in ``quality``."""

    p: float = param(0.5, range=(0.0, 1.0), help="probability of compression")
    quality: tuple[float, float] = param((40.0, 95.0), range=(1.0, 100.0), help="JPEG quality [low, high]")

    def __post_init__(self) -> None:
        ordered(self, "quality")

    def sample(self, b: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        return {"on": _bernoulli(gen, b, self.p), "quality": _uniform(gen, b, self.quality)}

    def apply(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
        """Blocks are aligned to ``x``'s top-left corner. ``x`` in [0, 1]; changed in place when nothing needs
        a gradient."""
        chosen = self._chosen(p, x)
        if chosen is None:
            return x
        out = ops.jpeg_like(x.index_select(0, chosen), p["quality"].to(x)[chosen])
        if torch.is_grad_enabled() and x.requires_grad:
            return x.index_copy(0, chosen, out)
        return x.index_copy_(0, chosen, out)  # nothing to differentiate: no copy of the whole batch

    def apply_mask_(self, x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """:meth:`apply` in place on ``x`` (in [0, 1]), without autograd. Returns where the straight-through
        derivative passes (B, C, H, W) bool (the round trip stayed inside [0, 1]), None where it passes
        everywhere (no sample compressed)."""
        chosen = self._chosen(p, x)
        if chosen is None:
            return None
        with torch.no_grad():
            out = ops.jpeg_round_trip(x.index_select(0, chosen), p["quality"].to(x)[chosen])
            inside = torch.ones_like(x, dtype=torch.bool)
            inside.index_copy_(0, chosen, ops.clamp_mask_(out, 0, 1))
            x.index_copy_(0, chosen, out)
        return inside

    @staticmethod
    def _chosen(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor | None:
        chosen = (p["on"] > 0).nonzero().flatten().tolist()
        return torch.tensor(chosen, device=x.device) if chosen else None


def params_to_json(params: dict[str, Any]) -> dict[str, Any]:
    """Nested params of tensors -> lists (replayable with :func:`params_from_json`)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, dict):
            out[k] = params_to_json(v)
        elif isinstance(v, torch.Tensor):
            out[k] = {"dtype": str(v.dtype).replace("torch.", ""), "data": v.tolist()}
        else:
            out[k] = v
    return out


def params_from_json(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, dict) and set(v) == {"dtype", "data"}:
            out[k] = torch.tensor(v["data"], dtype=getattr(torch, v["dtype"]))
        elif isinstance(v, dict):
            out[k] = params_from_json(v)
        else:
            out[k] = v
    return out


def select(params: dict[str, Any], index: torch.Tensor | list[int]) -> dict[str, Any]:
    """The params of a subset of samples (e.g. one failing condition)."""
    idx = torch.as_tensor(index, dtype=torch.long)
    return {k: select(v, idx) if isinstance(v, dict) else v[idx] for k, v in params.items()}


def concat(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate params of several batches."""
    first = parts[0]
    return {k: concat([p[k] for p in parts]) if isinstance(first[k], dict) else torch.cat([p[k] for p in parts])
            for k in first}

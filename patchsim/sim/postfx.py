"""Post-processing for what the software renderer lacks: fog/haze, exposure, sensor noise.

Fog follows Koschmieder's law: transmission ``t = exp(-3.912 d / V)`` for meteorological
visibility ``V`` and distance ``d``; the pixel becomes ``I t + A (1 - t)`` with airlight ``A``.
"""

from __future__ import annotations

import numpy as np

from patchsim.sim.camera import CameraModel

KOSCHMIEDER = 3.912  # -ln(0.02): contrast threshold of 2 %


def ground_depth_m(cam: CameraModel, ground_z_m: float = 0.0) -> np.ndarray:
    """Distance along each pixel's ray to the plane z = ground_z_m; inf above the horizon. (H, W)."""
    rays = cam.pixel_rays()
    rz = rays[..., 2]
    height = cam.position_m[2] - ground_z_m
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(rz < -1e-6, height / -rz, np.inf)
    return t * np.linalg.norm(rays, axis=-1)


def fog(image: np.ndarray, depth_m: np.ndarray, visibility_m: float, airlight_rgb: np.ndarray) -> np.ndarray:
    """Blend towards the airlight with distance.

    Args:
        image: (H, W, 3) float in [0, 1]. depth_m: (H, W), inf for sky. airlight_rgb: (3,).
    """
    t = np.exp(-KOSCHMIEDER * np.minimum(depth_m, 1e6) / visibility_m)[..., None].astype(np.float32)
    return image * t + airlight_rgb.astype(np.float32) * (1 - t)


def finish(image_u8: np.ndarray, exposure: float = 1.0, depth_m: np.ndarray | None = None,
           fog_visibility_m: float | None = None, airlight_rgb: np.ndarray | None = None,
           noise_std: float = 0.0, rng: np.random.Generator | None = None) -> np.ndarray:
    """Apply exposure, fog and noise to a rendered (H, W, 3) uint8 image; returns uint8."""
    if exposure == 1.0 and fog_visibility_m is None and noise_std == 0.0:
        return image_u8
    img = image_u8.astype(np.float32) / 255.0
    if exposure != 1.0:
        img = img * exposure
    if fog_visibility_m is not None:
        if depth_m is None or airlight_rgb is None:
            raise ValueError("fog needs a depth map and an airlight colour")
        img = fog(img, depth_m, fog_visibility_m, airlight_rgb)
    if noise_std > 0:
        rng = rng or np.random.default_rng(0)
        img = img + rng.standard_normal(img.shape, dtype=np.float32) * noise_std
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)

"""Lighting presets resolved into the numbers a renderer needs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchsim.sim.scenario import LightingSpec

# preset: azimuth_deg, elevation_deg, sun intensity, ambient, sun tint, sky horizon, sky zenith, cloudiness
_PRESETS = {
    "noon": (160.0, 60.0, 0.75, 0.50, (1.0, 0.98, 0.95), (0.72, 0.80, 0.90), (0.32, 0.50, 0.82), 0.25),
    "morning": (95.0, 22.0, 0.70, 0.45, (1.0, 0.92, 0.80), (0.85, 0.82, 0.78), (0.40, 0.55, 0.80), 0.30),
    "evening": (265.0, 12.0, 0.65, 0.40, (1.0, 0.80, 0.62), (0.95, 0.75, 0.58), (0.35, 0.42, 0.65), 0.35),
    "overcast": (180.0, 50.0, 0.15, 0.85, (1.0, 1.0, 1.0), (0.78, 0.79, 0.80), (0.62, 0.64, 0.67), 0.0),
    "dusk": (280.0, 4.0, 0.25, 0.35, (0.95, 0.70, 0.60), (0.55, 0.45, 0.45), (0.15, 0.18, 0.32), 0.1),
}


@dataclass
class ResolvedLighting:
    sun_azimuth_deg: float
    sun_elevation_deg: float
    sun_rgb: np.ndarray  # (3,) directional light colour x intensity
    ambient_rgb: np.ndarray  # (3,)
    sky_horizon_rgb: tuple[float, float, float]
    sky_zenith_rgb: tuple[float, float, float]
    cloudiness: float
    fog_visibility_m: float | None
    fog_rgb: np.ndarray  # (3,) airlight colour
    shadow_alpha: float  # darkening of a cast shadow, in [0, 1]
    exposure: float


def resolve_lighting(spec: LightingSpec) -> ResolvedLighting:
    az, el, sun, amb, tint, horizon, zenith, clouds = _PRESETS[spec.preset]
    az = spec.sun_azimuth_deg if spec.sun_azimuth_deg is not None else az
    el = spec.sun_elevation_deg if spec.sun_elevation_deg is not None else el
    sun = spec.sun_intensity if spec.sun_intensity is not None else sun
    amb = spec.ambient if spec.ambient is not None else amb
    tint_arr = np.array(tint)
    fog_rgb = np.array(horizon) * 0.6 + 0.4 * np.array([0.8, 0.8, 0.82])
    shadow = 0.0 if not spec.shadows else float(np.clip(sun / (sun + amb + 1e-6), 0, 0.85))
    ambient_rgb = amb * (0.7 + 0.3 * tint_arr)
    return ResolvedLighting(az, el, tint_arr * sun, ambient_rgb, horizon, zenith, clouds, spec.fog_visibility_m,
                            fog_rgb, shadow, spec.exposure)

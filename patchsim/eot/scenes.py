"""Scene banks: real frames with the slot's corners, where patches are placed.

A :class:`SceneBank` holds, per frame, the clean image, the slot's four image corners, the
slot's shading (the light that falls on it, measured in a second render where the slot is a
known grey: ``shade = render / grey``, the brightness ratio Armory uses for green screens), and
the camera-to-slot distance. Two sources:

- the simulator: frames of a scenario at sampled distances, lateral offsets and randomizations;
- a folder of the user's photos with annotated corners (``corners.json``), as RP2 used photos
  of the real sign. :func:`propose_face_corners` suggests the corners of a sign face with
  OpenCV contours, for the user to confirm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch

from patchsim.config import param, read_json
from patchsim.errors import ConfigError, PatchsimError

GREY = 0.5


@dataclass
class SceneConfig:
    scenario: str = param("scenarios/stop_sign_approach.yaml", help="scenario with the patch slot")
    slot: str = param("stop_face", help="patch slot to attack")
    frames: int = param(48, range=(1, 100000), help="frames in the bank")
    frames_per_seed: int = param(4, range=(1, 1000), help="distances rendered per randomized scene")
    seed: int = param(0, range=(0, 2**31 - 1), help="seed of scene randomization and poses")
    distance_m: tuple[float, float] = param((6.0, 30.0), unit="m", range=(1.0, 500.0), help="camera to slot")
    distance_sampling: Literal["uniform", "log"] = param(
        "uniform", help="uniform in distance, or in log distance (as many frames from 6-12 m as from 35-70 m)")
    lateral_offset_m: tuple[float, float] = param((-0.8, 0.8), unit="m", range=(-3.0, 3.0), help="ego in lane")
    heading_deg: tuple[float, float] = param((-3.0, 3.0), unit="deg", range=(-30.0, 30.0), help="ego heading")
    randomize: dict[str, list[Any]] = param(default_factory=dict, help="extra scenario randomization keys")
    photos: str | None = param(None, help="folder of photos with corners.json (instead of the simulator)")
    min_visible: float = param(0.9, range=(0.0, 1.0), help="least visible share of the slot")


@dataclass
class SceneBank:
    """Frames to attack on.

    Attributes:
        images: (N, 3, H, W) uint8 clean frames.
        shade: (N, 3, H, W) float16 light on the slot (>= 0; 1 = the colour shows as printed).
        corners: (N, 4, 2) slot corners in pixels (TL, TR, BR, BL of the patch image).
        distance_m: (N,) camera to slot centre.
        outline_uv: (K, 2) the slot's outline in normalized slot coordinates (for object boxes).
        slot_kind, slot_size_m: the slot.
        ground: road slots from the simulator: where the car stood on the road in each frame, for
            rollouts that move it (:mod:`patchsim.attack.rollout`): ``H`` (N, 3, 3) the homography from the
            road plane in the car's frame (metres; x forward, y left, origin at the rear axle) to pixels;
            ``lane_offset_m`` (N,) the rear axle left of the lane centre; ``heading_rad`` (N,) the car's
            heading from the road's; ``lane_width_m``, and the car's ``wheelbase_m`` and ``max_steer_rad``
            (wheel angle at full steer), each (N,). None for other banks.
        drive: (N,) long, which randomized scene each frame was rendered in: frames of one scene are views
            of one drive past the slot, which drive-level losses group (``EOTConfig.drive_frames``). None for
            photo banks.
    """

    images: torch.Tensor
    shade: torch.Tensor
    corners: torch.Tensor
    distance_m: torch.Tensor
    outline_uv: np.ndarray
    slot_kind: str
    slot_size_m: tuple[float, float]
    sign_kind: str | None = None
    source: dict = field(default_factory=dict)
    ground: dict[str, torch.Tensor] | None = None
    drive: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    def to_dict(self) -> dict:
        """Plain tensors and data (loadable with ``torch.load(weights_only=True)``)."""
        return {"images": self.images, "shade": self.shade, "corners": self.corners, "distance_m": self.distance_m,
                "outline_uv": torch.as_tensor(self.outline_uv), "slot_kind": self.slot_kind,
                "slot_size_m": list(self.slot_size_m), "sign_kind": self.sign_kind, "source": dict(self.source),
                "ground": self.ground, "drive": self.drive}

    @classmethod
    def from_dict(cls, d: dict) -> "SceneBank":
        return cls(d["images"], d["shade"], d["corners"], d["distance_m"], d["outline_uv"].numpy(), d["slot_kind"],
                   tuple(d["slot_size_m"]), d["sign_kind"], d["source"], d.get("ground"), d.get("drive"))

    def to(self, device: str | torch.device) -> "SceneBank":
        return SceneBank(self.images.to(device), self.shade.to(device), self.corners.to(device),
                         self.distance_m.to(device), self.outline_uv, self.slot_kind, self.slot_size_m,
                         self.sign_kind, self.source,
                         None if self.ground is None else {k: v.to(device) for k, v in self.ground.items()},
                         None if self.drive is None else self.drive.to(device))


def _slot_shade(grey_render: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Shading map (H, W, 3): grey render / GREY inside ``region``, the region's median elsewhere."""
    shade = grey_render.astype(np.float32) / 255.0 / GREY
    if region.sum() < 4:
        raise PatchsimError("slot not visible in the shading render")
    med = np.median(shade[region], axis=0)
    out = np.empty_like(shade)
    out[:] = med
    out[region] = shade[region]
    return out


def build_sim_bank(cfg: SceneConfig, sim=None) -> SceneBank:
    """Render a bank from the built-in simulator (or any backend with a label render)."""
    from patchsim.sim.embedded import EmbeddedSimulator
    from patchsim.sim.scenario import load_scenario

    scenario = load_scenario(cfg.scenario)
    if cfg.slot not in {p.name for p in scenario.patch_slots}:
        raise ConfigError(f"scenario has no patch slot {cfg.slot!r} "
                          f"(slots: {', '.join(p.name for p in scenario.patch_slots) or 'none'})", cfg.scenario)
    scenario.randomize = {**scenario.randomize, **cfg.randomize}
    own = sim is None
    sim = sim or EmbeddedSimulator(labels=True)
    rng = np.random.default_rng([cfg.seed, 17])
    images, shades, corners, dists, grounds, drives = [], [], [], [], [], []
    slot_spec = None
    try:
        k = 0
        attempts = 0
        while len(images) < cfg.frames:
            attempts += 1
            if attempts > cfg.frames * 20:
                raise PatchsimError(f"could not render {cfg.frames} frames with slot {cfg.slot!r} in view; "
                                    "check distance_m and the scenario")
            sim.reset(scenario, seed=int(cfg.seed * 100003 + k))
            k += 1
            placement = sim.layout.slots[cfg.slot]
            slot_spec = placement
            lid = _slot_label(sim, placement)
            slot_centre_s, _ = sim.road.project(*placement.corners_m.mean(0)[:2])
            w_m, h_m = placement.size_m
            side = 32 * max(1, math.ceil(h_m / w_m))  # long narrow slots need more pixels to keep their aspect
            grey = np.zeros((side, max(2, round(side * w_m / h_m)), 4), np.float32)
            grey[..., :3] = GREY
            grey[..., 3] = 1.0
            for _ in range(cfg.frames_per_seed):
                if len(images) >= cfg.frames:
                    break
                d = _draw_distance(rng, cfg)
                lat = float(rng.uniform(*cfg.lateral_offset_m))
                head = math.radians(float(rng.uniform(*cfg.heading_deg)))
                s_ego = slot_centre_s - d - sim.scenario.camera.forward_m
                if s_ego < 0:
                    continue
                sim.set_patch(cfg.slot, None)
                clean = sim.set_ego_pose(s_ego, lat, head, 8.0)
                truth = clean.slots[cfg.slot]
                if placement.spec.kind == "road":
                    # an empty road slot is hidden, so it has no pixels in the clean label render
                    sim.set_patch(cfg.slot, grey)
                    region = sim.observe(labels=True).labels == lid
                    sim.set_patch(cfg.slot, None)
                else:
                    region = clean.labels == lid
                full = _slot_fully_in_view(truth.corners_px, clean.camera.width_px, clean.camera.height_px)
                if not truth.in_view or not full or region.sum() < 9:
                    continue
                expected = _expected_area(truth.corners_px, _outline_uv(sim, placement))
                if region.sum() < cfg.min_visible * expected:
                    continue  # occluded
                sim.set_patch(cfg.slot, grey)
                grey_frame = sim.observe(labels=False)
                sim.set_patch(cfg.slot, None)
                shades.append(_slot_shade(grey_frame.image, region))
                images.append(clean.image)
                corners.append(truth.corners_px.astype(np.float32))
                dists.append(truth.distance_m)
                drives.append(k - 1)
                if placement.spec.kind == "road":
                    grounds.append(_ground(sim, clean, placement, lat, head))
        sign_kind = None
        if slot_spec is not None and slot_spec.spec.kind == "sign_face":
            sign_kind = sim.scenario.sign(slot_spec.spec.sign).kind
        from patchsim.attack.patch import SlotInfo

        info = SlotInfo(cfg.slot, slot_spec.spec.kind, slot_spec.size_m, sign_kind)
        return SceneBank(
            images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
            shade=torch.from_numpy(np.stack(shades)).permute(0, 3, 1, 2).contiguous().half(),
            corners=torch.from_numpy(np.stack(corners)),
            distance_m=torch.tensor(dists, dtype=torch.float32),
            outline_uv=info.outline_uv(), slot_kind=info.kind, slot_size_m=tuple(slot_spec.size_m),
            sign_kind=sign_kind, source={"kind": "simulator", "scenario": cfg.scenario, "seed": cfg.seed},
            ground={k: torch.tensor(np.array([g[k] for g in grounds]), dtype=torch.float32) for k in grounds[0]}
            if grounds else None,
            drive=torch.tensor(drives, dtype=torch.long),
        )
    finally:
        if own:
            sim.close()


#: car-frame road points (x forward, y left; metres) the ground homography is fitted to
_GROUND_POINTS_M = np.array([[6.0, -3.0], [6.0, 3.0], [40.0, 3.0], [40.0, -3.0]])


def _ground(sim, frame, placement, lateral_offset_m: float, heading_rad: float) -> dict[str, np.ndarray]:
    """A frame's :attr:`SceneBank.ground` entries: the road-plane homography (car frame -> pixels, from the
    frame's pinhole camera), the car's offset and heading in its lane, and the lane width."""
    e = frame.ego
    c, s = math.cos(e.yaw_rad), math.sin(e.yaw_rad)
    z = float(placement.corners_m[:, 2].mean())  # the road surface under the slot
    world = np.stack([e.x_m + c * _GROUND_POINTS_M[:, 0] - s * _GROUND_POINTS_M[:, 1],
                      e.y_m + s * _GROUND_POINTS_M[:, 0] + c * _GROUND_POINTS_M[:, 1], np.full(4, z)], 1)
    uv, _ = frame.camera.project(world)
    H = cv2.getPerspectiveTransform(_GROUND_POINTS_M.astype(np.float32), uv.astype(np.float32))
    ego = sim.scenario.ego
    return {"H": H, "lane_offset_m": lateral_offset_m, "heading_rad": heading_rad,
            "lane_width_m": sim.scenario.road.lane_width_m, "wheelbase_m": ego.wheelbase_m,
            "max_steer_rad": math.radians(ego.max_steer_deg)}


def _draw_distance(rng: np.random.Generator, cfg: SceneConfig) -> float:
    lo, hi = cfg.distance_m
    if cfg.distance_sampling == "log":
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    return float(rng.uniform(lo, hi))


def _outline_uv(sim, placement) -> np.ndarray:
    from patchsim.attack.patch import SlotInfo

    kind = sim.scenario.sign(placement.spec.sign).kind if placement.spec.kind == "sign_face" else None
    return SlotInfo(placement.spec.name, placement.spec.kind, placement.size_m, kind).outline_uv()


def _slot_label(sim, placement) -> int:
    if placement.spec.kind == "sign_face":
        return sim.label_id(f"sign:{placement.spec.sign}")
    return sim.label_id(f"slot:{placement.spec.name}")


def _slot_fully_in_view(corners: np.ndarray, w: int, h: int) -> bool:
    return bool(np.isfinite(corners).all() and (corners[:, 0] >= 0).all() and (corners[:, 1] >= 0).all()
                and (corners[:, 0] <= w).all() and (corners[:, 1] <= h).all())


def _expected_area(corners: np.ndarray, outline_uv: np.ndarray) -> float:
    """Projected pixel area of the slot's real outline: the quad's area times the outline's share of it."""
    from patchsim.sim.truth import polygon_area

    return polygon_area(corners) * polygon_area(outline_uv)


# --------------------------------------------------------------------------- photos


def load_photo_bank(folder: str | Path, slot_size_m: tuple[float, float], sign_kind: str | None = "stop_sign",
                    max_side_px: int = 896) -> SceneBank:
    """A bank from the user's photos.

    ``folder/corners.json`` maps each image file name to ``{"corners": [[x, y] x 4], "distance_m": d}``
    with the face corners top-left, top-right, bottom-right, bottom-left in that image's pixels
    (``distance_m`` is optional). Images larger than ``max_side_px`` are reduced. The shading is
    estimated once per photo from the face's median brightness against the sign's own colours.
    """
    from patchsim.attack.patch import SlotInfo, raster_polygon
    from patchsim.sim.textures import sign_face

    folder = Path(folder)
    ann_path = folder / "corners.json"
    ann = read_json(ann_path, "corners.json (image name -> {corners: [[x, y] x 4]})")
    if not isinstance(ann, dict) or not ann:
        raise ConfigError("expected a mapping of image names to annotations", ann_path)
    info = SlotInfo("photo", "sign_face" if sign_kind else "road", slot_size_m, sign_kind)
    images, shades, corners, dists = [], [], [], []
    size = None
    for name, entry in sorted(ann.items()):
        path = folder / name
        img = cv2.imread(str(path))
        if img is None:
            raise ConfigError(f"image {name!r} listed but not readable", ann_path, name)
        try:
            c = np.asarray(entry["corners"], np.float32)
        except (KeyError, TypeError) as exc:
            raise ConfigError("needs 'corners': [[x, y], [x, y], [x, y], [x, y]]", ann_path, name) from exc
        if c.shape != (4, 2):
            raise ConfigError(f"corners must be 4 [x, y] pairs, got shape {c.shape}", ann_path, f"{name}.corners")
        h, w = img.shape[:2]
        scale = min(1.0, max_side_px / max(h, w))
        if size is None:
            size = (int(round(w * scale)) // 32 * 32, int(round(h * scale)) // 32 * 32)
        fx, fy = size[0] / w, size[1] / h
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)[:, :, ::-1]
        c = c * [fx, fy]
        # shading: face pixels vs the sign's reference colours, one RGB factor per photo
        ref = sign_face(sign_kind, 64)[..., :3].astype(np.float32) / 255 if sign_kind else np.full((64, 64, 3), 0.33)
        hom = cv2.getPerspectiveTransform(np.float32([[0, 0], [64, 0], [64, 64], [0, 64]]), c.astype(np.float32))
        inside = raster_polygon(info.outline_uv(), (64, 64)) > 0.5
        warped_ref = cv2.warpPerspective(ref, hom, size)
        mask = cv2.warpPerspective(inside.astype(np.uint8), hom, size, flags=cv2.INTER_NEAREST) > 0
        seen = img.astype(np.float32)[mask] / 255
        expect = warped_ref[mask]
        factor = np.median(seen, 0) / np.maximum(np.median(expect, 0), 1e-3)
        images.append(np.ascontiguousarray(img))
        shades.append(np.broadcast_to(factor.astype(np.float32), (size[1], size[0], 3)).copy())
        corners.append(c.astype(np.float32))
        dists.append(float(entry.get("distance_m", 0.0)))
    return SceneBank(
        images=torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
        shade=torch.from_numpy(np.stack(shades)).permute(0, 3, 1, 2).contiguous().half(),
        corners=torch.from_numpy(np.stack(corners)), distance_m=torch.tensor(dists, dtype=torch.float32),
        outline_uv=info.outline_uv(), slot_kind=info.kind, slot_size_m=slot_size_m, sign_kind=sign_kind,
        source={"kind": "photos", "folder": str(folder)},
    )


def propose_face_corners(image_rgb: np.ndarray, sign_kind: str = "stop_sign") -> np.ndarray | None:
    """Suggest the face corners (4, 2) of the largest red sign (stop or yield) in a photo, or None.

    Finds the red region in HSV, simplifies its contour to the sign's vertex count, matches the
    vertices to the sign's outline by angle around the centroid, and maps the face rectangle's
    corners through the fitted homography (affine for a triangle). For the user to confirm.
    """
    from patchsim.sim.textures import face_outline

    hsv = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2HSV)
    red = ((hsv[..., 0] < 10) | (hsv[..., 0] > 170)) & (hsv[..., 1] > 90) & (hsv[..., 2] > 50)
    red = cv2.morphologyEx(red.astype(np.uint8) * 255, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    contours, _ = cv2.findContours(red, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    contour = max(contours, key=cv2.contourArea)
    if cv2.contourArea(contour) < 100:
        return None
    hull = cv2.convexHull(contour)
    ref = face_outline(sign_kind)
    want = len(ref)
    peri = cv2.arcLength(hull, True)
    approx = None
    for eps in np.linspace(0.005, 0.08, 40):
        cand = cv2.approxPolyDP(hull, eps * peri, True).reshape(-1, 2).astype(np.float64)
        if len(cand) == want:
            approx = cand
            break
    if approx is None:
        return None
    c_img, c_ref = approx.mean(0), ref.mean(0)
    ang_img = np.arctan2(approx[:, 1] - c_img[1], approx[:, 0] - c_img[0])
    ang_ref = np.arctan2(ref[:, 1] - c_ref[1], ref[:, 0] - c_ref[0])
    img_sorted = approx[np.argsort(ang_img)]
    ref_sorted = ref[np.argsort(ang_ref)]
    best, best_err = None, np.inf
    for shift in range(want):
        rolled = np.roll(img_sorted, shift, axis=0)
        a = np.arctan2(rolled[:, 1] - c_img[1], rolled[:, 0] - c_img[0])
        b = np.arctan2(ref_sorted[:, 1] - c_ref[1], ref_sorted[:, 0] - c_ref[0])
        err = np.abs(np.angle(np.exp(1j * (a - b)))).sum()
        if err < best_err:
            best, best_err = rolled, err
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
    if want >= 4:
        hom, _ = cv2.findHomography(ref_sorted, best)
        if hom is None:
            return None
        return cv2.perspectiveTransform(square[None], hom)[0]
    aff = cv2.getAffineTransform(ref_sorted.astype(np.float32), best.astype(np.float32))
    return np.c_[square, np.ones(4)] @ aff.T

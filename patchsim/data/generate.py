"""Labelled data from the simulator.

Detector data is an Ultralytics/YOLO dataset::

    OUT/data.yaml                     names, and train/val/test image folders
    OUT/images/{train,val,test}/*.jpg
    OUT/labels/{train,val,test}/*.txt  "class cx cy w h", normalized
    OUT/corners/{train,val,test}/*.json  sign id, kind, face corners (4, 2) in that image's pixels
    OUT/manifest.json                  config, seed, counts, versions

``train`` and ``val`` hold square crops at native pixel scale (cheap to train on: the detector
is fully convolutional and sees signs at the size it meets on the road); ``test`` holds full
frames from other scenes, for the held-out metrics.

Lane-keeper data is frames with the expert's steering and the lane state (see
:func:`lane_samples`); the lane-keeper trainer draws it on the fly, and ``--task lanekeeper``
writes it to disk.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from patchsim.config import param, to_dict
from patchsim.data.scenes import SceneRanges, random_detection_scene, random_lane_scene
from patchsim.runs import atomic_path, manifest, write_json, write_text
from patchsim.sim.base import Frame

DETECTOR_CLASSES: tuple[str, ...] = ("stop_sign", "speed_limit", "yield", "vehicle")
LANE_MARKING_LABEL = 3  # id of lane markings in the label render (patchsim.sim.scene3d)


@dataclass
class DetectorDataConfig:
    seed: int = param(0, range=(0, 2**31 - 1), help="fixes every scene, pose and crop")
    train_scenes: int = param(300, range=(0, 100000), help="scenes for the training split")
    val_scenes: int = param(30, range=(0, 100000), help="scenes for the validation split")
    test_scenes: int = param(40, range=(0, 100000), help="scenes for the held-out full-frame split")
    frames_per_scene: int = param(10, range=(1, 200), help="ego positions rendered per scene")
    crop_px: int = param(320, range=(0, 4096), help="square crop side for train/val; 0 keeps full frames")
    width_px: int = param(640, range=(64, 4096), help="frame width")
    height_px: int = param(384, range=(64, 4096), help="frame height")
    sign_distance_m: tuple[float, float] = param((3.0, 65.0), unit="m", range=(1.0, 300.0), help="target distance")
    negative_share: float = param(0.08, range=(0.0, 1.0), help="frames placed without aiming at a sign")
    min_box_height_px: float = param(6.0, unit="px", range=(1.0, 200.0), help="smaller objects are not labelled")
    min_visible: float = param(0.5, range=(0.0, 1.0), help="least unoccluded share of a labelled object")
    jpeg_quality: int = param(95, range=(50, 100), help="JPEG quality of written images")
    ranges: SceneRanges = param(default_factory=SceneRanges)


@dataclass
class LabelledImage:
    image: np.ndarray  # (H, W, 3) uint8
    boxes: list[tuple[int, np.ndarray]]  # (class index, xyxy px)
    corners: list[dict] = field(default_factory=list)


def frame_labels(frame: Frame, min_box_height_px: float, min_visible: float) -> LabelledImage:
    """YOLO boxes and sign corners of a frame (needs the frame's label render for occlusion)."""
    boxes: list[tuple[int, np.ndarray]] = []
    corners = []
    for s in frame.signs:
        if s.box_xyxy is None:
            continue
        full = s.face_polygon_px
        full_area = (full[:, 0].max() - full[:, 0].min()) * (full[:, 1].max() - full[:, 1].min())
        b = s.box_xyxy
        inside = (b[2] - b[0]) * (b[3] - b[1]) / max(full_area, 1e-6)
        if (b[3] - b[1]) < min_box_height_px or inside < 0.6 or (s.visible_fraction or 0.0) < min_visible:
            continue
        boxes.append((DETECTOR_CLASSES.index(s.kind), b.copy()))
        corners.append({"id": s.id, "kind": s.kind, "face_corners_px": s.face_corners_px.tolist(),
                        "distance_m": s.distance_m})
    for o in frame.objects:
        if o.box_xyxy is None:
            continue
        b = o.box_xyxy
        if (b[3] - b[1]) < min_box_height_px * 1.5 or (o.visible_fraction or 0.0) < min_visible * 0.6:
            continue
        boxes.append((DETECTOR_CLASSES.index("vehicle"), b.copy()))
    return LabelledImage(frame.image, boxes, corners)


def crop(sample: LabelledImage, x0: int, y0: int, size: int) -> LabelledImage:
    """A square crop, keeping boxes with at least 60 % of their area inside."""
    img = sample.image[y0:y0 + size, x0:x0 + size]
    boxes = []
    for cls, b in sample.boxes:
        c = np.clip(b - [x0, y0, x0, y0], 0, size)
        area = (b[2] - b[0]) * (b[3] - b[1])
        if (c[2] - c[0]) * (c[3] - c[1]) >= 0.6 * area and c[3] - c[1] >= 3:
            boxes.append((cls, c))
    corners = [{**c, "face_corners_px": (np.array(c["face_corners_px"]) - [x0, y0]).tolist()} for c in sample.corners]
    return LabelledImage(img, boxes, corners)


def _ego_positions(rng: np.random.Generator, sc, cfg: DetectorDataConfig, road_length: float) -> Iterator[tuple]:
    """(s, lateral offset, heading offset) poses aimed at random signs, avoiding vehicles in the ego lane."""
    lane_centre = sc.road.lane_centre_m(sc.ego_lane)
    blocked = [v.s_m for v in sc.vehicles if abs(v.lateral_m - lane_centre) < 2.5]
    for _ in range(cfg.frames_per_scene):
        for _try in range(20):
            if sc.signs and rng.random() >= cfg.negative_share:
                sign = sc.signs[int(rng.integers(len(sc.signs)))]
                lo, hi = cfg.sign_distance_m
                dist = float(rng.uniform(lo, hi)) if rng.random() < 0.35 else float(rng.uniform(lo, min(hi, 40.0)))
                s = sign.s_m - dist - sc.camera.forward_m
            else:
                s = float(rng.uniform(0, road_length - 10))
            if s < 0 or any(-4.0 < b - s < 12.0 for b in blocked):
                continue
            yield s, float(rng.uniform(-0.9, 0.9)), math.radians(float(rng.uniform(-4, 4)))
            break


def detector_samples(cfg: DetectorDataConfig, split: str, n_scenes: int, sim_spec=None) -> Iterator[LabelledImage]:
    """Labelled full frames of ``n_scenes`` random scenes (split name is part of the seed)."""
    from patchsim.sim.factory import make_simulator

    split_id = {"train": 0, "val": 1, "test": 2}[split]
    with make_simulator(sim_spec or "embedded", labels=True) as sim:
        for k in range(n_scenes):
            rng = np.random.default_rng([cfg.seed, split_id, k])
            sc = random_detection_scene(rng, cfg.ranges, cfg.width_px, cfg.height_px)
            sim.reset(sc)
            for s, lat, head in _ego_positions(rng, sc, cfg, sim.road.length_m):
                frame = sim.set_ego_pose(s, lat, head, 8.0)
                yield frame_labels(frame, cfg.min_box_height_px, cfg.min_visible)


def _write_sample(out: Path, split: str, name: str, sample: LabelledImage, quality: int) -> None:
    h, w = sample.image.shape[:2]
    ok, buf = cv2.imencode(".jpg", sample.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    with atomic_path(out / "images" / split / f"{name}.jpg") as tmp:
        tmp.write_bytes(buf.tobytes())
    lines = []
    for cls, b in sample.boxes:
        cx, cy = (b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h
        bw, bh = (b[2] - b[0]) / w, (b[3] - b[1]) / h
        lines.append(f"{cls} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
    write_text(out / "labels" / split / f"{name}.txt", "\n".join(lines) + ("\n" if lines else ""))
    write_json(out / "corners" / split / f"{name}.json", sample.corners)


def generate_detector_dataset(cfg: DetectorDataConfig, out_dir: str | Path, progress: bool = True,
                              sim_spec=None) -> dict:
    """Write the detector dataset; returns counts and timing (also saved in ``manifest.json``)."""
    from tqdm import tqdm

    out = Path(out_dir)
    counts: dict[str, dict[str, int]] = {}
    t0 = time.perf_counter()
    for split, n in (("train", cfg.train_scenes), ("val", cfg.val_scenes), ("test", cfg.test_scenes)):
        per_class = [0] * len(DETECTOR_CLASSES)
        images = 0
        crop_rng = np.random.default_rng([cfg.seed, 99, len(split)])
        bar = tqdm(total=n * cfg.frames_per_scene, desc=f"data {split}", disable=not progress, leave=False)
        for i, sample in enumerate(detector_samples(cfg, split, n, sim_spec)):
            bar.update(1)
            if split != "test" and cfg.crop_px:
                sample = _aimed_crop(sample, cfg.crop_px, crop_rng)
            _write_sample(out, split, f"{split}_{i:06d}", sample, cfg.jpeg_quality)
            images += 1
            for cls, _ in sample.boxes:
                per_class[cls] += 1
        bar.close()
        counts[split] = {"images": images, **{c: per_class[j] for j, c in enumerate(DETECTOR_CLASSES)}}
    elapsed = time.perf_counter() - t0
    data_yaml = "\n".join([
        "# written by patchsim data generate",
        "path: .",
        "train: images/train",
        "val: images/val",
        "test: images/test",
        "names:",
        *[f"  {i}: {n}" for i, n in enumerate(DETECTOR_CLASSES)],
    ]) + "\n"
    write_text(out / "data.yaml", data_yaml)
    summary = {"counts": counts, "seconds": round(elapsed, 1),
               "images_per_s": round(sum(c["images"] for c in counts.values()) / max(elapsed, 1e-9), 2)}
    write_json(out / "manifest.json", manifest("data generate --task detector", cfg.seed, to_dict(cfg), **summary))
    return summary


def _aimed_crop(sample: LabelledImage, size: int, rng: np.random.Generator) -> LabelledImage:
    """A crop that contains a random labelled box when there is one (a sign, four times in five)."""
    h, w = sample.image.shape[:2]
    size = min(size, h, w)
    x_hi, y_hi = w - size, h - size
    if sample.boxes and rng.random() < 0.9:
        signs = [b for c, b in sample.boxes if DETECTOR_CLASSES[c] != "vehicle"]
        pool = signs if signs and rng.random() < 0.8 else [b for _, b in sample.boxes]
        b = pool[int(rng.integers(len(pool)))]
        lo_x = int(np.clip(math.ceil(b[2]) - size, 0, x_hi))
        hi_x = int(np.clip(math.floor(b[0]), 0, x_hi))
        lo_y = int(np.clip(math.ceil(b[3]) - size, 0, y_hi))
        hi_y = int(np.clip(math.floor(b[1]), 0, y_hi))
        x0 = int(rng.integers(min(lo_x, hi_x), max(lo_x, hi_x) + 1))
        y0 = int(rng.integers(min(lo_y, hi_y), max(lo_y, hi_y) + 1))
    else:
        x0, y0 = int(rng.integers(0, x_hi + 1)), int(rng.integers(0, y_hi + 1))
    return crop(sample, x0, y0, size)


# --------------------------------------------------------------------------- lane keeping


@dataclass
class LaneDataConfig:
    seed: int = param(0, range=(0, 2**31 - 1), help="fixes every scene and perturbation")
    scenes: int = param(60, range=(1, 100000), help="random roads")
    steps_per_scene: int = param(200, range=(10, 100000), help="simulation steps per road")
    speed_mps: tuple[float, float] = param((7.0, 14.0), unit="m/s", range=(0.0, 40.0), help="cruise speed")
    steer_noise: float = param(0.08, range=(0.0, 1.0), help="std of steering noise injected while driving (DART)")
    start_offset_m: float = param(0.8, unit="m", range=(0.0, 3.0), help="max start offset from the lane centre")
    start_heading_deg: float = param(6.0, unit="deg", range=(0.0, 45.0), help="max start heading error")
    every_n_steps: int = param(2, range=(1, 100), help="keep one frame in this many")
    ranges: SceneRanges = param(default_factory=SceneRanges)


@dataclass
class LaneSample:
    image: np.ndarray  # (H, W, 3) uint8 full frame
    marking_mask: np.ndarray  # (H, W) bool, lane markings from the label render
    expert_steer: float  # in [-1, 1]
    lateral_offset_m: float
    heading_error_rad: float
    curvature_1pm: float
    speed_mps: float


def lane_samples(cfg: LaneDataConfig, policy=None, policy_share: float = 0.0, sim_spec=None) -> Iterator[LaneSample]:
    """Drive random roads; yield frames labelled with the expert's steering.

    While collecting, the car is steered by the expert plus Gaussian noise (DART), or by
    ``policy(frame) -> steer`` for a share ``policy_share`` of the scenes (DAgger); the label is
    always the expert's steering for the state the car is in. Every scene starts off-centre.
    """
    from patchsim.closedloop.drivers import GroundTruthDriver
    from patchsim.closedloop.episode import run_episode
    from patchsim.sim.factory import make_simulator

    with make_simulator(sim_spec or "embedded", labels=True) as sim:
        for k in range(cfg.scenes):
            rng = np.random.default_rng([cfg.seed, 7, k])
            sc = random_lane_scene(rng, cfg.ranges)
            speed = float(rng.uniform(*cfg.speed_mps))
            sc.ego.speed_mps = speed
            sc.driver.target_speed_mps = speed
            sc.ego.lateral_offset_m = float(rng.uniform(-cfg.start_offset_m, cfg.start_offset_m))
            sc.ego.heading_offset_deg = float(rng.uniform(-cfg.start_heading_deg, cfg.start_heading_deg))
            use_policy = policy is not None and rng.random() < policy_share
            driver = GroundTruthDriver(steer_noise_std=cfg.steer_noise, policy=policy if use_policy else None, rng=rng)
            samples = LaneSampleRecorder(cfg.every_n_steps)

            def leaving(frame: Frame) -> bool:
                return far_off_lane(frame) or frame.ego.s_m > sim.road.length_m - 30

            run_episode(sim, sc, None, driver, recorders=[samples], max_steps=cfg.steps_per_scene, until=leaving,
                        run_to_end=True)
            yield from samples.samples


def far_off_lane(frame: Frame) -> bool:
    """The car is so far off its lane that the rest of the drive teaches nothing."""
    return abs(frame.lane.lateral_offset_m) > frame.lane.width_m * 0.9


class LaneSampleRecorder:
    """Keeps one frame in ``every_n`` with the expert's steering, until the car is far off its lane."""

    def __init__(self, every_n: int):
        self.every_n = every_n
        self.samples: list[LaneSample] = []
        self._off_lane = False

    def on_frame(self, frame: Frame, control, record: dict) -> None:
        self._off_lane |= far_off_lane(frame)  # the frame that ends the drive is not kept
        if self._off_lane or frame.index % self.every_n:
            return
        self.samples.append(LaneSample(frame.image, np.isin(frame.labels, [LANE_MARKING_LABEL]), record["expert_steer"],
                                       frame.lane.lateral_offset_m, frame.lane.heading_error_rad,
                                       frame.lane.curvature_1pm, frame.ego.speed_mps))

    def close(self, ok: bool) -> None:
        pass


def generate_lane_dataset(cfg: LaneDataConfig, out_dir: str | Path, progress: bool = True, sim_spec=None) -> dict:
    """Write lane-keeper frames (JPEG), marking masks (PNG) and ``labels.jsonl``."""
    from tqdm import tqdm

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "masks").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = 0
    with atomic_path(out / "labels.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for sample in tqdm(lane_samples(cfg, sim_spec=sim_spec), desc="lane data", disable=not progress, leave=False):
            name = f"{n:06d}"
            ok, buf = cv2.imencode(".jpg", sample.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            (out / "images" / f"{name}.jpg").write_bytes(buf.tobytes())
            cv2.imwrite(str(out / "masks" / f"{name}.png"), sample.marking_mask.astype(np.uint8) * 255)
            fh.write(json.dumps({"image": f"images/{name}.jpg", "mask": f"masks/{name}.png",
                                 "expert_steer": sample.expert_steer, "lateral_offset_m": sample.lateral_offset_m,
                                 "heading_error_rad": sample.heading_error_rad,
                                 "curvature_1pm": sample.curvature_1pm, "speed_mps": sample.speed_mps}) + "\n")
            n += 1
    summary = {"frames": n, "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "manifest.json", manifest("data generate --task lanekeeper", cfg.seed, to_dict(cfg), **summary))
    return summary

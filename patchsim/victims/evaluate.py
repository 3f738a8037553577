"""Clean-quality metrics of the victims: detector mAP50 and stop-sign recall by distance, and
closed-loop lane keeping in the built-in simulator."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml

from patchsim.errors import ConfigError
from patchsim.victims.detector import YoloDetector
from patchsim.victims.metrics import ImageResult, box_iou, map50

DISTANCE_BINS_M = ((5.0, 30.0), (30.0, 40.0))


def _read_labels(path: Path, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file() or not path.read_text().strip():
        return np.zeros((0, 4)), np.zeros(0, int)
    rows = np.array([[float(v) for v in line.split()] for line in path.read_text().strip().splitlines()])
    cls = rows[:, 0].astype(int)
    cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
    return np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1), cls


MIN_SCORED_HEIGHT_PX = 10.0


def detector_map50(det: YoloDetector, data_yaml: str | Path, split: str = "test", batch: int = 8,
                   limit: int | None = None, min_height_px: float = MIN_SCORED_HEIGHT_PX) -> dict:
    """mAP50 of ``det`` on a split of a patchsim/YOLO dataset, classes matched by name.

    Only classes the detector has are scored (a COCO model has no ``yield``). Objects shorter than
    ``min_height_px`` (a stop sign beyond about 50 m) are ignored: not counted as misses, and a
    detection on one is not a false positive (KITTI's rule; its minimum is 25 px).
    """
    data_yaml = Path(data_yaml)
    meta = yaml.safe_load(data_yaml.read_text())
    root = (data_yaml.parent / meta.get("path", ".")).resolve()
    names = [meta["names"][i] for i in sorted(meta["names"])]
    to_data: dict[int, int] = {}
    scored = []
    for ci, name in enumerate(names):
        try:
            for mi in det.class_indices(name):
                to_data[mi] = ci
            scored.append(ci)
        except ConfigError:  # a data class this detector does not have
            continue
    images = sorted((root / meta[split]).glob("*.jpg"))[:limit]
    results: list[ImageResult] = []
    device = det.device
    for i in range(0, len(images), batch):
        chunk = images[i:i + batch]
        arrs = [cv2.imread(str(p))[:, :, ::-1] for p in chunk]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float().div(255).to(device)
        for p, a, d in zip(chunk, arrs, det.predict(x, conf=0.001, iou=0.7, max_det=300)):
            h, w = a.shape[:2]
            gt_b, gt_c = _read_labels(root / str(meta[split]).replace("images", "labels") / f"{p.stem}.txt", w, h)
            pc = d.classes.cpu().numpy()
            keep = np.array([c in to_data for c in pc], bool)
            mapped = np.array([to_data[c] for c in pc[keep]], int)
            gt_keep = np.isin(gt_c, scored)
            small = (gt_b[:, 3] - gt_b[:, 1]) < min_height_px
            results.append(ImageResult(d.boxes_xyxy.cpu().numpy()[keep], d.scores.cpu().numpy()[keep], mapped,
                                       gt_b[gt_keep], gt_c[gt_keep], small[gt_keep]))
    out = map50(results, len(names))
    return {
        "map50": out["map50"], "images": len(results), "min_height_px": min_height_px,
        "ap50": {names[c]: round(v, 4) for c, v in out["ap50"].items()},
        "gt_count": {names[c]: n for c, n in out["gt_count"].items() if c in scored},
    }


@dataclass
class RecallConfig:
    scenario: str = "scenarios/stop_sign_approach.yaml"
    sign_id: str = "stop_1"
    seeds: int = 10
    distance_step_m: float = 1.0
    distance_range_m: tuple[float, float] = (5.0, 40.0)
    iou_threshold: float = 0.5
    conf: float = 0.25


def stop_sign_recall(det: YoloDetector, cfg: RecallConfig | None = None, sim_spec=None) -> dict:
    """Recall of ``stop_sign`` in approach frames, by camera-to-sign distance.

    For each seed (randomizing light, sign offset and ego offset as the scenario says) the ego is
    placed so the camera is at each distance from the sign; a frame counts when the sign's face
    lies fully inside the image and at least 90 % unoccluded; it is recalled when a stop-sign
    detection overlaps its box with IoU >= 0.5.
    """
    from patchsim.sim.factory import make_simulator
    from patchsim.sim.scenario import load_scenario

    cfg = cfg or RecallConfig()
    scenario = load_scenario(cfg.scenario)
    stop_idx = det.class_indices("stop_sign")
    bins = {f"{lo:g}-{hi:g}m": [0, 0] for lo, hi in DISTANCE_BINS_M}
    out_of_view = 0
    distances = np.arange(cfg.distance_range_m[0], cfg.distance_range_m[1] + 1e-6, cfg.distance_step_m)
    with make_simulator(sim_spec or "embedded", labels=True) as sim:
        for seed in range(cfg.seeds):
            sim.reset(scenario, seed=seed)
            sign = next(s for s in sim.layout.signs if s.spec.id == cfg.sign_id)
            frames, truths = [], []
            for d in distances:
                s_cam = sign.spec.s_m - d
                frame = sim.set_ego_pose(s_cam - sim.scenario.camera.forward_m,
                                         sim.scenario.ego.lateral_offset_m, 0.0, 8.0)
                truth = frame.sign(cfg.sign_id)
                full = truth.face_polygon_px
                inside = (full is not None and truth.box_xyxy is not None
                          and full[:, 0].min() >= 0 and full[:, 1].min() >= 0
                          and full[:, 0].max() <= frame.camera.width_px and full[:, 1].max() <= frame.camera.height_px)
                if not inside or (truth.visible_fraction or 0) < 0.9:
                    out_of_view += 1
                    continue
                frames.append(frame.image)
                truths.append(truth)
            if not frames:
                continue
            x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255).to(det.device)
            for i in range(0, len(x), 8):
                for dets, truth in zip(det.predict(x[i:i + 8]), truths[i:i + 8]):
                    keep = torch.isin(dets.classes, torch.tensor(stop_idx, device=dets.classes.device))
                    boxes = dets.boxes_xyxy[keep].cpu().numpy()
                    hit = bool(len(boxes)) and box_iou(boxes, truth.box_xyxy[None])[:, 0].max() >= cfg.iou_threshold
                    for (lo, hi), key in zip(DISTANCE_BINS_M, bins):
                        if lo <= truth.distance_m < hi or (hi == DISTANCE_BINS_M[-1][1] and truth.distance_m == hi):
                            bins[key][0] += int(hit)
                            bins[key][1] += 1
    return {
        "recall": {k: (round(h / n, 4) if n else None) for k, (h, n) in bins.items()},
        "frames": {k: n for k, (h, n) in bins.items()},
        "frames_sign_out_of_view": out_of_view,
    }


@dataclass
class DriveResult:
    """Closed-loop outcome of one lane-keeping run.

    Attributes:
        mean_abs_offset_m: mean |lateral offset| of the rear-axle centre from the lane centre.
        departed: a wheel crossed a lane boundary (see :mod:`patchsim.closedloop.outcomes`).
    """

    seed: int
    distance_m: float
    mean_abs_offset_m: float
    max_abs_offset_m: float
    departed: bool
    offsets_m: list[float]


def drive_closed_loop(model, scenario, seed: int, distance_m: float = 200.0, sim=None,
                      patches: dict | None = None, sim_spec=None) -> DriveResult:
    """Drive ``scenario`` with a lane-keeper (module or ``frame -> steer``) at the wheel; the expert holds speed.

    Stops after ``distance_m`` along the road or at the end of the scenario's duration.
    """
    from patchsim.closedloop.drivers import LaneKeeperDriver
    from patchsim.closedloop.episode import run_episode
    from patchsim.sim.factory import make_simulator

    own = sim is None
    sim = sim or make_simulator(sim_spec or "embedded")
    start_s_m: list[float] = []  # road position of the episode's first frame

    def far_enough(frame) -> bool:
        if not start_s_m:
            start_s_m.append(frame.ego.s_m)
        return frame.ego.s_m - start_s_m[0] >= distance_m

    try:
        ep = run_episode(sim, scenario, seed, LaneKeeperDriver(model), patches, until=far_enough)
    finally:
        if own:
            sim.close()
    offsets = [r["lateral_offset_m"] for r in ep.frames]
    travelled = ep.frames[-1]["ego_s_m"] - ep.frames[0]["ego_s_m"]
    return DriveResult(seed, float(travelled), ep.outcome["mean_abs_lateral_offset_m"],
                       ep.outcome["max_lateral_offset_m"], ep.outcome["lane_departure"], offsets)


def lanekeeper_closed_loop(model, scenarios: tuple[str, ...] = ("scenarios/lane_keep_straight.yaml",
                                                                "scenarios/lane_keep_curve.yaml"),
                           seeds: int = 10, distance_m: float = 200.0, device: str = "cpu", sim_spec=None) -> dict:
    """Mean |offset| and departures over ``seeds`` runs of each scenario."""
    from patchsim.sim.factory import make_simulator
    from patchsim.sim.scenario import load_scenario

    steer = model.to(device)
    per_scenario = {}
    all_offsets, departures = [], 0
    with make_simulator(sim_spec or "embedded") as sim:
        for path in scenarios:
            sc = load_scenario(path)
            runs = [drive_closed_loop(steer, sc, seed, distance_m, sim=sim) for seed in range(seeds)]
            per_scenario[sc.name] = {
                "mean_abs_offset_m": round(float(np.mean([r.mean_abs_offset_m for r in runs])), 4),
                "max_abs_offset_m": round(float(max(r.max_abs_offset_m for r in runs)), 4),
                "departures": int(sum(r.departed for r in runs)),
                "distance_m": round(float(np.mean([r.distance_m for r in runs])), 1),
            }
            all_offsets += [r.mean_abs_offset_m for r in runs]
            departures += sum(r.departed for r in runs)
    return {"mean_abs_offset_m": round(float(np.mean(all_offsets)), 4), "departures": int(departures),
            "runs": len(all_offsets), "scenarios": per_scenario}

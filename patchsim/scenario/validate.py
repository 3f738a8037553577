"""Closed-loop validation of a patch: put it into the simulator and let the victim drive.

Sign patches (detector victims): the car approaches the sign with a perception-driven planner.
It brakes for the stop line once the detector has confirmed a stop sign (seen in 2 of the last
3 frames); without that it drives on. Outcomes per run: did it stop before the line, by how
much it overran the line, from how far the sign was first detected, and the share of frames
(with the sign in view) in which it was detected.

Road patches (lane-keeper victims): the lane-keeper steers through the patched road; outcomes:
mean and max |lateral offset|, whether a wheel left the lane, and the time from first seeing the
patch to leaving the lane.

Every run is done twice, clean and patched, with the same seed.
"""

from __future__ import annotations

import json
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from patchsim.runs import manifest, write_json
from patchsim.sim.base import Frame

CONFIRM_FRAMES = (2, 3)  # detections needed among the last frames to act on a stop sign
VEHICLE_WIDTH_M = 1.8


@dataclass
class StopRun:
    seed: int
    patched: bool
    stopped_before_line: bool
    stop_line_overrun_m: float  # > 0: front bumper beyond the line when the car stopped or the run ended
    first_detection_m: float | None  # camera-to-sign distance at the first stop-sign detection
    detection_rate: float  # share of frames with the sign in view in which it was detected
    frames_sign_in_view: int


@dataclass
class LaneRun:
    seed: int
    patched: bool
    mean_abs_offset_m: float
    max_abs_offset_m: float
    departed: bool
    time_to_departure_s: float | None  # from the first frame that shows the patch


def _read_run(run_dir: Path) -> tuple[dict, dict, np.ndarray]:
    import cv2

    doc = json.loads((run_dir / "patch.json").read_text())
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    rgba = cv2.imread(str(run_dir / doc["files"]["rgba"]), cv2.IMREAD_UNCHANGED)
    if rgba is None:
        raise FileNotFoundError(f"{run_dir / doc['files']['rgba']}: patch image missing")
    return doc, cfg, cv2.cvtColor(rgba, cv2.COLOR_BGRA2RGBA)


def _stop_run(sim, scenario, seed: int, det, slot: str, rgba: np.ndarray | None, sign_id: str, writer=None,
              conf: float = 0.25) -> StopRun:
    from patchsim.sim.render import expert_for

    frame = sim.reset(scenario, seed=seed)
    if rgba is not None:
        sim.set_patch(slot, rgba)
        frame = sim.observe()
    expert = expert_for(sim.scenario, sim.road)
    expert.stop_at_line = False
    stop_idx = torch.tensor(det.class_indices("stop_sign"))
    recent: deque[bool] = deque(maxlen=CONFIRM_FRAMES[1])
    confirmed = False
    first_m = None
    seen = hits = 0
    stopped = False
    for _ in range(sim.scenario.num_steps):
        x = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float().div(255).to(det.device)
        d = det.predict(x)[0]
        hit = bool(((d.scores >= conf) & torch.isin(d.classes.cpu(), stop_idx)).any())
        truth = frame.sign(sign_id)
        if truth.in_view:
            seen += 1
            hits += int(hit)
        if hit and first_m is None and truth.in_view:
            first_m = truth.distance_m
        recent.append(hit)
        if sum(recent) >= CONFIRM_FRAMES[0]:
            confirmed = True
        expert.stop_at_line = confirmed
        if writer is not None:
            writer.append(_annotate(frame, d, det, confirmed))
        if frame.ego.speed_mps < 0.05 and confirmed:
            stopped = True
            break
        frame = sim.step(expert.control(frame))
        if frame.stop_line_distance_m is not None and frame.stop_line_distance_m < -8.0:
            break
    gap = frame.stop_line_distance_m if frame.stop_line_distance_m is not None else float("nan")
    return StopRun(seed, rgba is not None, bool(stopped and gap >= -0.5), round(max(0.0, -gap), 3),
                   None if first_m is None else round(first_m, 2), round(hits / max(seen, 1), 4), seen)


def _annotate(frame: Frame, dets, det, confirmed: bool) -> np.ndarray:
    import cv2

    img = frame.image.copy()
    for box, score, cls in zip(dets.boxes_xyxy.cpu().numpy(), dets.scores.cpu().numpy(), dets.classes.cpu().numpy()):
        x1, y1, x2, y2 = (int(v) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), (255, 255, 0), 1)
        cv2.putText(img, f"{det.names[int(cls)]} {score:.2f}", (x1, max(8, y1 - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (255, 255, 0), 1, cv2.LINE_AA)
    text = f"{frame.ego.speed_mps:4.1f} m/s  stop sign {'CONFIRMED' if confirmed else 'not seen'}"
    cv2.putText(img, text, (8, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return img


def _lane_run(sim, scenario, seed: int, model, slot: str, rgba: np.ndarray | None, writer=None) -> LaneRun:
    from patchsim.victims.evaluate import drive_closed_loop, model_steer_fn

    steer = model_steer_fn(model)
    first_seen: list[float] = []
    departed_at: list[float] = []

    def hook(frame: Frame) -> None:
        if slot in frame.slots and frame.slots[slot].in_view and not first_seen:
            first_seen.append(frame.time_s)
        limit = (frame.lane.width_m - VEHICLE_WIDTH_M) / 2
        if abs(frame.lane.lateral_offset_m) > limit and not departed_at:
            departed_at.append(frame.time_s)
        if writer is not None:
            writer.append(frame.image)

    res = drive_closed_loop(steer, scenario, seed, sim=sim, patches={slot: rgba} if rgba is not None else None,
                            frame_hook=hook)
    ttd = None
    if departed_at:
        ttd = round(departed_at[0] - (first_seen[0] if first_seen else 0.0), 3)
    return LaneRun(seed, rgba is not None, round(res.mean_abs_offset_m, 4), round(res.max_abs_offset_m, 4),
                   res.departed, ttd)


def validate_run(run_dir: str | Path, out_dir: str | Path | None = None, seeds: int = 3,
                 scenario_path: str | None = None, video: bool = True) -> dict:
    """Validate the patch of an attack run directory in closed loop; write ``results.json`` (and a video)."""
    from patchsim.sim.embedded import EmbeddedSimulator
    from patchsim.sim.render import VideoWriter
    from patchsim.sim.scenario import load_scenario
    from patchsim.victims.registry import load_victim

    run = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run / "validation"
    out.mkdir(parents=True, exist_ok=True)
    doc, cfg, rgba = _read_run(run)
    slot = doc["slot"]["name"]
    scenario = load_scenario(scenario_path or cfg["scenes"]["scenario"])
    victim = load_victim(doc["victim"])
    runs = []
    with EmbeddedSimulator() as sim:
        for seed in range(seeds):
            for patched in (False, True):
                writer = VideoWriter(out / f"seed{seed}_{'patched' if patched else 'clean'}.mp4",
                                     1 / scenario.dt_s) if video and seed == 0 else None
                try:
                    if doc["slot"]["kind"] == "sign_face":
                        sign_id = next(p.sign for p in scenario.patch_slots if p.name == slot)
                        r = _stop_run(sim, scenario, seed, victim, slot, rgba if patched else None, sign_id, writer)
                    else:
                        r = _lane_run(sim, scenario, seed, victim, slot, rgba if patched else None, writer)
                finally:
                    if writer is not None:
                        writer.close()
                runs.append(asdict(r))
    summary = _summarize(runs, doc["slot"]["kind"])
    result = {"patch": doc["patch_id"], "scenario": scenario.name, "victim": doc["victim"], "seeds": seeds,
              "summary": summary, "runs": runs}
    write_json(out / "results.json", result)
    write_json(out / "run.json", manifest("validate", None, {"run_dir": str(run), "seeds": seeds,
                                                              "scenario": scenario.name}))
    return result


def _summarize(runs: list[dict], kind: str) -> dict:
    out = {}
    for patched in (False, True):
        rs = [r for r in runs if r["patched"] == patched]
        key = "patched" if patched else "clean"
        if kind == "sign_face":
            firsts = [r["first_detection_m"] for r in rs if r["first_detection_m"] is not None]
            out[key] = {
                "stopped_before_line": sum(r["stopped_before_line"] for r in rs),
                "runs": len(rs),
                "mean_stop_line_overrun_m": round(float(np.mean([r["stop_line_overrun_m"] for r in rs])), 3),
                "mean_detection_rate": round(float(np.mean([r["detection_rate"] for r in rs])), 4),
                "mean_first_detection_m": round(float(np.mean(firsts)), 2) if firsts else None,
            }
        else:
            out[key] = {
                "departures": sum(r["departed"] for r in rs), "runs": len(rs),
                "mean_abs_offset_m": round(float(np.mean([r["mean_abs_offset_m"] for r in rs])), 4),
                "max_abs_offset_m": round(float(max(r["max_abs_offset_m"] for r in rs)), 4),
            }
    return out


"""Render a scenario with the ground-truth expert driving: frames, video and ground truth."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchsim.config import to_dict
from patchsim.runs import atomic_path, manifest, write_image, write_json
from patchsim.sim.base import Frame, Simulator
from patchsim.sim.expert import ExpertDriver
from patchsim.sim.scenario import Scenario, load_scenario


@dataclass
class RenderSummary:
    out_dir: Path
    frames: int
    fps_rendered: float
    video: Path | None


def expert_for(sim_scenario: Scenario, road) -> ExpertDriver:
    """The ground-truth driver a scenario asks for."""
    sc = sim_scenario
    governs = any(s.kind == "stop_sign" for s in sc.signs) and sc.road.stop_line_s_m is not None
    return ExpertDriver(
        road=road,
        lane_centre_m=road.lane_centre_m(sc.ego_lane),
        wheelbase_m=sc.ego.wheelbase_m,
        max_steer_rad=math.radians(sc.ego.max_steer_deg),
        lookahead_m=sc.driver.lookahead_m,
        target_speed_mps=sc.driver.target_speed_mps,
        stop_at_line=sc.driver.stop_at_stop_line and governs,
        stop_line_s_m=sc.road.stop_line_s_m,
    )


class VideoWriter:
    """MP4 (H.264) writer using the ffmpeg binary shipped with imageio-ffmpeg; atomic on close."""

    def __init__(self, path: Path, fps: float):
        import imageio.v2 as imageio

        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                          macro_block_size=16, ffmpeg_log_level="error")

    def append(self, image: np.ndarray) -> None:
        self._writer.append_data(image)

    def close(self, ok: bool = True) -> None:
        self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def render_scenario(scenario: Scenario | str | Path, out_dir: str | Path, seed: int | None = None,
                    sim: Simulator | None = None, patches: dict[str, np.ndarray] | None = None,
                    video: bool = True, frames: bool = True, max_steps: int | None = None) -> RenderSummary:
    """Drive ``scenario`` with the expert and write ``frames/NNNNNN.png``, ``video.mp4``,
    ``ground_truth.jsonl`` (one JSON object per frame), ``scenario.json`` and ``run.json``.

    Args:
        patches: slot name -> patch image (see :func:`patchsim.sim.base.check_patch_image`).
    """
    from patchsim.sim.embedded import EmbeddedSimulator

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    own = sim is None
    sim = sim or EmbeddedSimulator()
    writer = None
    count = 0
    t_render = 0.0
    try:
        t0 = time.perf_counter()
        frame: Frame = sim.reset(scenario, seed=seed)
        for slot, img in (patches or {}).items():
            sim.set_patch(slot, img)
        if patches:
            frame = sim.observe()
        t_render += time.perf_counter() - t0
        resolved = sim.scenario
        driver = expert_for(resolved, sim.road)
        if video:
            writer = VideoWriter(out / "video.mp4", fps=1.0 / resolved.dt_s)
        steps = resolved.num_steps if max_steps is None else min(max_steps, resolved.num_steps)
        with atomic_path(out / "ground_truth.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as gt:
            for i in range(steps):
                if frames:
                    write_image(out / "frames" / f"{frame.index:06d}.png", frame.image)
                if writer:
                    writer.append(frame.image)
                gt.write(json.dumps(frame.ground_truth()) + "\n")
                count += 1
                if i == steps - 1:
                    break
                t0 = time.perf_counter()
                frame = sim.step(driver.control(frame))
                t_render += time.perf_counter() - t0
        if writer:
            writer.close(ok=True)
            writer = None
        write_json(out / "scenario.json", to_dict(resolved))
        write_json(out / "run.json", manifest("sim render", seed, to_dict(resolved),
                                              frames=count, render_fps=count / max(t_render, 1e-9)))
    finally:
        if writer:
            writer.close(ok=False)
        if own:
            sim.close()
    return RenderSummary(out, count, count / max(t_render, 1e-9), out / "video.mp4" if video else None)

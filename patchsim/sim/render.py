"""Render a scenario with the ground-truth expert driving: frames, video and ground truth."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchsim.config import to_dict
from patchsim.runs import manifest, output_dir, write_json
from patchsim.sim.base import Simulator
from patchsim.sim.scenario import Scenario, load_scenario


@dataclass
class RenderSummary:
    out_dir: Path
    frames: int
    fps_rendered: float
    video: Path | None


def render_scenario(scenario: Scenario | str | Path, out_dir: str | Path, seed: int | None = None,
                    sim: Simulator | None = None, patches: dict[str, np.ndarray] | None = None,
                    video: bool = True, frames: bool = True, max_steps: int | None = None,
                    sim_spec=None) -> RenderSummary:
    """Drive ``scenario`` with the expert for its whole duration and write ``frames/NNNNNN.png``,
    ``video.mp4``, ``ground_truth.jsonl`` (one JSON object per frame), ``scenario.json`` and ``run.json``.

    Args:
        patches: slot name -> patch image (see :func:`patchsim.sim.base.check_patch_image`).
        sim: a simulator to use (kept open); else one is made from ``sim_spec`` (default embedded).
    """
    from patchsim.closedloop.drivers import GroundTruthDriver
    from patchsim.closedloop.episode import run_episode
    from patchsim.closedloop.recorders import FramesRecorder, GroundTruthRecorder, VideoRecorder
    from patchsim.sim.factory import make_simulator

    if not isinstance(scenario, Scenario):
        scenario = load_scenario(scenario)
    out = Path(out_dir)
    with output_dir(out):  # a failed render leaves nothing behind
        own = sim is None
        sim = sim or make_simulator(sim_spec or "embedded")
        try:
            gt = GroundTruthRecorder(out / "ground_truth.jsonl")
            recorders = [gt]
            if frames:
                recorders.append(FramesRecorder(out / "frames"))
            if video:
                recorders.append(VideoRecorder(out / "video.mp4", fps=1.0 / scenario.dt_s, annotated=False))
            t0 = time.perf_counter()
            episode = run_episode(sim, scenario, seed, GroundTruthDriver(), patches, recorders, max_steps=max_steps,
                                  run_to_end=True)
            wall = time.perf_counter() - t0
            resolved = sim.scenario
            count = gt.count
            write_json(out / "scenario.json", to_dict(resolved))
            write_json(out / "run.json", manifest("sim render", seed, to_dict(resolved), frames=count,
                                                  simulator=sim.backend, outcome=episode.outcome,
                                                  frames_per_s=count / max(wall, 1e-9)))
        finally:
            if own:
                sim.close()
    return RenderSummary(out, count, count / max(wall, 1e-9), out / "video.mp4" if video else None)

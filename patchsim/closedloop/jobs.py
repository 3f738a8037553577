"""Episode jobs: a small picklable description of one episode, and the worker that runs them.

A job names everything its result depends on (scenario file and overrides, seed, driver, victims,
planner thresholds, patch, simulator backend), so the same job gives the same outcome in any
worker, on any executor; its id is a hash of that description. A worker keeps one simulator and
one copy of each victim and patch across the jobs it runs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchsim.closedloop.drivers import LaneKeeperDriver, PlannerConfig, PlannerDriver
from patchsim.closedloop.episode import run_episode
from patchsim.config import from_dict, to_dict
from patchsim.errors import ConfigError
from patchsim.sim.factory import SimSpec, make_simulator

DRIVERS = ("planner", "lanekeeper")


@dataclass(frozen=True)
class EpisodeJob:
    """One episode to run.

    Attributes:
        scenario: path of the scenario file.
        overrides: dotted scenario key -> value (a sweep's condition), applied before the seed's randomization.
        seed: randomizes the scenario (its ``randomize`` keys) and the sensor noise.
        driver: ``planner`` (detector in the loop) or ``lanekeeper``.
        victim: the detector (planner) or lane-keeper spec at the wheel.
        patch: attack run directory, or None for the clean run.
        variant: ``clean`` or the patch's name, for tables.
        condition: index of the sweep condition (0 for a plain scenario run).
        planner: the planner's thresholds, as a dict of :class:`PlannerConfig` keys.
        sim: the simulator backend ("embedded" or "carla"); the server address is the worker's.
        video: write an annotated video of the episode here (not part of the job's identity).
    """

    scenario: str
    seed: int
    driver: str
    victim: str
    overrides: tuple[tuple[str, Any], ...] = ()
    patch: str | None = None
    variant: str = "clean"
    condition: int = 0
    planner: tuple[tuple[str, Any], ...] = ()
    sim: str = "embedded"
    video: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.driver not in DRIVERS:
            raise ConfigError(f"unknown driver {self.driver!r} (choose one of: {', '.join(DRIVERS)})", key="driver")

    def identity(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("video")
        d["overrides"] = [list(kv) for kv in self.overrides]
        d["planner"] = [list(kv) for kv in self.planner]
        return d

    @property
    def job_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def planner_items(cfg: PlannerConfig) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(to_dict(cfg).items()))


class EpisodeWorker:
    """Runs jobs; keeps its simulator, victims, patches and scenarios between them.

    Args:
        sim: the simulator this worker drives (a CARLA worker has its own server).
        device: where the victims run.
        threads: torch threads in this worker (1 keeps results identical across executors).
    """

    def __init__(self, sim: SimSpec | None = None, device: str = "cpu", threads: int | None = 1):
        import torch

        if threads is not None:
            torch.set_num_threads(threads)
        self.sim_spec = sim or SimSpec()
        self.device = device
        self._sim = None
        self._victims: dict[str, Any] = {}
        self._patches: dict[str, Any] = {}
        self._scenarios: dict[str, Any] = {}

    def _simulator(self):
        if self._sim is None:
            self._sim = make_simulator(self.sim_spec)
        return self._sim

    def _victim(self, spec: str):
        if spec not in self._victims:
            from patchsim.victims.registry import load_victim

            self._victims[spec] = load_victim(spec, device=self.device)
        return self._victims[spec]

    def _scenario(self, path: str, overrides: tuple):
        from patchsim.sim.scenario import load_scenario, with_overrides

        if path not in self._scenarios:
            self._scenarios[path] = load_scenario(path)
        sc = self._scenarios[path]
        return with_overrides(sc, dict(overrides), path) if overrides else sc

    def _patch(self, path: str):
        from patchsim.closedloop.patches import load_patch

        if path not in self._patches:
            self._patches[path] = load_patch(path)
        return self._patches[path]

    def run(self, job: EpisodeJob, frames: bool = True) -> dict[str, Any]:
        """Run ``job``; returns its description, outcome and (with ``frames``) per-frame records."""
        from patchsim.closedloop.patches import check_slot
        from patchsim.closedloop.recorders import VideoRecorder

        if job.sim != self.sim_spec.backend:
            raise ConfigError(f"job for the {job.sim} simulator sent to a {self.sim_spec.backend} worker", key="sim")
        scenario = self._scenario(job.scenario, job.overrides)
        planner_cfg = from_dict(PlannerConfig, dict(job.planner), "planner")
        victim = self._victim(job.victim)
        driver = PlannerDriver(victim, planner_cfg) if job.driver == "planner" else LaneKeeperDriver(victim)
        patches = None
        if job.patch is not None:
            ref = self._patch(job.patch)
            check_slot(ref, scenario, job.scenario)
            patches = {ref.slot: ref.rgba}
        recorders = []
        if job.video:
            recorders.append(VideoRecorder(job.video, fps=1.0 / scenario.dt_s))
        ep = run_episode(self._simulator(), scenario, job.seed, driver, patches, recorders,
                         min_score=planner_cfg.min_score)
        return {"job_id": job.job_id, "job": job.identity(), **ep.to_json(frames=frames)}

    def close(self) -> None:
        if self._sim is not None:
            self._sim.close()
            self._sim = None


def write_episode(out_dir: Path, result: dict[str, Any]) -> Path:
    """One finished episode, written atomically as ``OUT/<job id>.json``."""
    from patchsim.runs import write_json

    return write_json(Path(out_dir) / f"{result['job_id']}.json", result)

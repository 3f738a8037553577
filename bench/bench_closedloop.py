"""Closed-loop throughput: the episode engine's overhead and the scaling over workers.

Two measurements on the same episodes (a held-out stop-sign sweep, clean and behind a grey
full-face poster, the planner with the default detector in the loop):

1. Engine overhead, in this process, one torch thread: each episode run by ``run_episode``, then
   its bare cost replayed (the same reset, the same number of renders with the recorded
   controls, one detector pass per frame, nothing else), interleaved episode by episode.
   overhead = engine time / bare time - 1 (goal <= 15 %).
2. Episodes per minute of the whole sweep with 1 worker, 2 local worker processes and 2 Ray
   actors (local Ray instance), start-up included, each into a fresh directory; the outcomes of
   the three runs are compared.

    python bench/bench_closedloop.py [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _grey_poster(run: Path) -> Path:
    from tests.closedloop.conftest import write_patch_run

    rgba = np.full((64, 64, 4), 128, np.uint8)
    rgba[..., 3] = 255
    return write_patch_run(run, rgba)


def _sweep(tmp: Path, samples: int) -> Path:
    import yaml

    spec = yaml.safe_load((ROOT / "scenarios" / "sweeps" / "stop_sign_heldout.yaml").read_text())
    spec["scenario"] = str(ROOT / "scenarios" / "stop_sign_approach.yaml")
    spec["samples"] = samples
    spec["videos"] = 0
    spec["patches"] = [str(_grey_poster(tmp / "grey"))]
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def engine_overhead(sweep: Path, tmp: Path) -> dict:
    import torch

    from patchsim.closedloop.drivers import PlannerConfig, frame_tensor
    from patchsim.closedloop.jobs import EpisodeWorker
    from patchsim.closedloop.sweep import load_sweep, sweep_jobs
    from patchsim.sim.base import Control

    spec, scenario = load_sweep(sweep)
    jobs = sweep_jobs(spec, scenario, tmp / "overhead")
    threads = torch.get_num_threads()
    worker = EpisodeWorker(threads=1)
    engine_s, bare_s, frames = [], [], 0
    cfg = PlannerConfig()
    for job in jobs:
        t0 = time.perf_counter()
        result = worker.run(job)
        engine_s.append(time.perf_counter() - t0)
        controls = [Control(*f["control"]) for f in result["frames"]]
        frames += len(controls)
        sim, det = worker._simulator(), worker._victim(job.victim)
        sc = worker._scenario(job.scenario, job.overrides)
        t0 = time.perf_counter()
        frame = sim.reset(sc, seed=job.seed)
        if job.patch:
            ref = worker._patch(job.patch)
            sim.set_patch(ref.slot, ref.rgba)
            frame = sim.observe()
        for i, c in enumerate(controls):
            det.predict(frame_tensor(frame, det.device), conf=cfg.record_min_score)
            if i < len(controls) - 1:
                frame = sim.step(c)
        bare_s.append(time.perf_counter() - t0)
    worker.close()
    torch.set_num_threads(threads)
    e, b = float(np.sum(engine_s)), float(np.sum(bare_s))
    return {"episodes": len(jobs), "frames": frames, "engine_s": round(e, 2), "bare_s": round(b, 2),
            "overhead": round(e / b - 1, 4), "median_episode_ratio": round(float(np.median(np.array(engine_s)
                                                                                            / np.array(bare_s))), 4)}


def throughput(sweep: Path, tmp: Path) -> dict:
    from patchsim.closedloop.sweep import run_sweep

    out = {}
    outcomes = {}
    for name, workers, executor in (("1 worker", 1, "local"), ("2 workers", 2, "local"), ("ray, 2 actors", 2, "ray")):
        target = tmp / name.replace(" ", "_").replace(",", "")
        t0 = time.perf_counter()
        summary = run_sweep(sweep, target, workers=workers, executor=executor, progress=False, report=False)
        wall = time.perf_counter() - t0
        out[name] = {"episodes": summary["episodes"], "wall_s": round(wall, 1),
                     "episodes_per_min": round(summary["episodes"] / wall * 60, 2)}
        outcomes[name] = {p.stem: json.loads(p.read_text())["outcome"] for p in (target / "episodes").glob("*.json")}
    base = out["1 worker"]["episodes_per_min"]
    for row in out.values():
        row["speed_up"] = round(row["episodes_per_min"] / base, 3)
    ref = outcomes["1 worker"]
    out["same_outcomes"] = all(o == ref for o in outcomes.values())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=8, help="held-out conditions (each clean and patched)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        sweep = _sweep(tmp, args.samples)
        result = {"overhead": engine_overhead(sweep, tmp), "throughput": throughput(sweep, tmp)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

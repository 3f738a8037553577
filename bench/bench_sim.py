"""Simulator throughput: frames per second at 640x384 (render + ground truth), and the time to
generate 1,000 labelled detector images.

    python bench/bench_sim.py [--frames 300] [--images 1000]

Prints one JSON object. Run it on an otherwise idle machine; it uses one core (Panda3D's software
renderer is single-threaded).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def fps(frames: int, labels: bool, fog: bool = False) -> float:
    from patchsim.sim.expert import ExpertDriver
    from patchsim.sim.factory import make_simulator
    from patchsim.sim.scenario import load_scenario

    sc = load_scenario(ROOT / "scenarios" / "stop_sign_approach.yaml")
    sc.duration_s = 1000.0
    if fog:
        sc.lighting.fog_visibility_m = 150.0
    with make_simulator("embedded", labels=labels) as sim:
        frame = sim.reset(sc, seed=0)
        driver = ExpertDriver.for_scenario(sim.scenario, sim.road)
        driver.stop_at_line = False
        for _ in range(10):  # warm-up
            frame = sim.step(driver.control(frame))
        t0 = time.perf_counter()
        for _ in range(frames):
            frame = sim.step(driver.control(frame))
        return frames / (time.perf_counter() - t0)


def dataset_seconds(images: int) -> float:
    from patchsim.data.generate import DetectorDataConfig, generate_detector_dataset

    per_scene = 10
    cfg = DetectorDataConfig(seed=123, train_scenes=images // per_scene, val_scenes=0, test_scenes=0,
                             frames_per_scene=per_scene)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        generate_detector_dataset(cfg, tmp, progress=False)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--images", type=int, default=1000)
    args = ap.parse_args()
    out = {
        "resolution": "640x384",
        "fps_render_and_ground_truth": round(fps(args.frames, labels=False), 1),
        "fps_with_label_render": round(fps(args.frames, labels=True), 1),
        "fps_with_fog": round(fps(args.frames, labels=False, fog=True), 1),
        "goal_fps": 30,
    }
    secs = dataset_seconds(args.images)
    out.update({"labelled_images": args.images, "dataset_seconds": round(secs, 1),
                "images_per_second": round(args.images / secs, 2)})
    print(json.dumps(out))


if __name__ == "__main__":
    main()

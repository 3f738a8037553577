"""Soak check of resume: a short attack and a small sweep, each killed (SIGKILL) at random points
and resumed every time, must end bitwise equal to an uninterrupted run.

    python bench/bench_soak.py [--kills 10] [--seed 0] [--out runs/soak] [--skip-sweep]

The attack: `stop_sticker_vanish` shrunk to a few frames and steps (checkpoint every 2 steps), run
by `patchsim attack` in a subprocess. Each try is started (with --resume once a checkpoint exists)
and killed after a random time drawn from the span of the uninterrupted run; then a last --resume
finishes it. Compared with the uninterrupted run: the checkpoint's colours, mask and optimizer
state, the loss history, patch.png, and the held-out metrics.

The sweep: the stop-sign approach near the sign, 8 random conditions x (clean, grey poster), run by
`patchsim scenario sweep --workers 1`, killed and resumed the same way. Compared: every episode's
outcome and record, without its wall time, and its per-frame data (detections, scores, offsets),
reported as bitwise equal or by the largest difference.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "patchsim.cli", *args, "--no-progress"]


def _timed(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _timed_until(argv: list[str], first_result) -> tuple[float, float]:
    """Run ``argv`` to the end: (seconds until ``first_result()`` held, seconds in all)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = None
    while proc.poll() is None:
        if first is None and first_result():
            first = time.perf_counter() - t0
        time.sleep(0.02)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    total = time.perf_counter() - t0
    return (first if first is not None else total), total


def _kill_and_resume(make_argv, wait_s: tuple[float, float], kills: int, rng: random.Random, started,
                     progress) -> dict:
    """Start the command ``kills`` times, each killed (SIGKILL) after a random time in ``wait_s``, recording
    ``progress()`` after each kill; then let it finish."""
    interrupted, times, reached = 0, [], []
    for _ in range(kills):
        wait = rng.uniform(*wait_s)
        proc = subprocess.Popen(make_argv(started()), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            interrupted += 1
        times.append(round(wait, 2))
        reached.append(progress())
    subprocess.run(make_argv(started()), cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return {"kills": kills, "killed_while_running": interrupted, "kill_after_s": times, "progress_at_kills": reached}


def soak_attack(out: Path, kills: int, rng: random.Random) -> dict:
    import torch
    import yaml

    from patchsim.attack.config import load_attack_config
    from patchsim.config import to_dict

    cfg = load_attack_config("stop_sticker_vanish")
    cfg.scenes.frames, cfg.scenes.frames_per_seed = 6, 6
    cfg.heldout.frames, cfg.heldout.frames_per_seed = 4, 4
    cfg.eot.crop_px = 128
    cfg.eot.background_pool, cfg.eot.background_reuse = 4, 2.0
    cfg.batch, cfg.steps, cfg.eval_every, cfg.checkpoint_every = 2, 400, 50, 2
    cfg.eval_samples, cfg.final_samples, cfg.mask_search_steps = 4, 8, 4
    cfg.time_budget_s, cfg.plateau_evals, cfg.closed_loop_seeds = None, None, 0
    cfg_file = out / "soak_attack.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    whole, killed = out / "attack_whole", out / "attack_killed"
    _timed(_cli("attack", "--out", str(out / "attack_warm"), "--config", str(cfg_file)))  # fills the scene cache
    startup, span = _timed_until(_cli("attack", "--out", str(whole), "--config", str(cfg_file)),
                                 lambda: (whole / "checkpoint.pt").is_file())

    def argv(resume: bool) -> list[str]:
        return _cli("attack", "--out", str(killed), "--config", str(cfg_file), *(["--resume"] if resume else []))

    def steps_done() -> int:  # the checkpoint's step: how far the killed runs got
        ck = killed / "checkpoint.pt"
        return int(torch.load(ck, weights_only=True)["state"]["step"]) if ck.is_file() else 0

    # each try is killed after its start-up and a random share of the optimization, so that about
    # 10 tries are needed: most kills land in the optimization loop, some in the final evaluation
    work = span - startup
    facts = _kill_and_resume(argv, (startup, startup + 1.2 * work / kills), kills, rng,
                             lambda: (killed / "checkpoint.pt").is_file(), steps_done)
    a = torch.load(whole / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    same_opt = all(torch.equal(x, y) for x, y in zip(_tensors(a["optimizer"]), _tensors(b["optimizer"])))
    metrics = [json.loads((d / "patch.json").read_text())["metrics"] for d in (whole, killed)]
    drop = ("wall_s", "optimize_s", "eval_s")
    equal = {
        "colours": torch.equal(a["colours"], b["colours"]),
        "mask": torch.equal(a["mask"], b["mask"]),
        "optimizer_state": same_opt,
        "loss_history": a["state"]["history"] == b["state"]["history"],
        "patch_png": (whole / "patch.png").read_bytes() == (killed / "patch.png").read_bytes(),
        "heldout_metrics": {k: v for k, v in metrics[0].items() if k not in drop}
        == {k: v for k, v in metrics[1].items() if k not in drop},
    }
    return {"uninterrupted_s": round(span, 1), "startup_s": round(startup, 1), "steps": cfg.steps, **facts,
            "equal": equal,
            "bitwise_equal": all(equal.values())}


def _tensors(obj):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from _tensors(obj[k])
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def soak_sweep(out: Path, kills: int, rng: random.Random) -> dict:
    import numpy as np
    import yaml

    from patchsim.runs import write_image

    scenario = yaml.safe_load((ROOT / "scenarios" / "stop_sign_approach.yaml").read_text())
    scenario["ego"]["start_s_m"] = 48.8
    scenario["duration_s"] = 6.0
    (out / "near_stop.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    poster = out / "grey_poster"
    poster.mkdir(exist_ok=True)
    rgba = np.full((64, 64, 4), 128, np.uint8)
    rgba[..., 3] = 255
    write_image(poster / "patch_rgba.png", rgba)
    (poster / "patch.json").write_text(json.dumps({
        "patch_id": "grey-poster", "victim": "detector:default", "files": {"rgba": "patch_rgba.png"},
        "slot": {"name": "stop_face", "kind": "sign_face", "size_m": [0.75, 0.75]}}))
    sweep = out / "soak_sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "soak", "scenario": str(out / "near_stop.yaml"), "seeds": 1,
                                     "patches": [str(poster)],
                                     "random": {"lighting.preset": ["noon", "overcast", "dusk", "morning"],
                                                "ego.speed_mps": [8.0, 12.0]},
                                     "samples": 8, "sample_seed": 0, "videos": 0}))
    whole, killed = out / "sweep_whole", out / "sweep_killed"
    first, span = _timed_until(_cli("scenario", "sweep", str(sweep), "--out", str(whole), "--workers", "1"),
                               lambda: any((whole / "episodes").glob("*.json")))
    episode_s = (span - first) / 15  # 16 episodes; the first ended at `first`
    startup, work = first - episode_s, span - first + episode_s
    # each try is killed after its start-up and a random share of the episodes, about 10 tries in all
    facts = _kill_and_resume(lambda _: _cli("scenario", "sweep", str(sweep), "--out", str(killed), "--workers", "1"),
                             (startup, startup + 1.2 * work / kills), kills, rng, lambda: True,
                             lambda: len(list((killed / "episodes").glob("*.json"))))

    def records(d: Path) -> dict:
        out = {}
        for p in sorted((d / "episodes").glob("*.json")):
            rec = json.loads(p.read_text())
            rec.pop("wall_s", None)
            out[p.name] = rec
        return out

    a, b = records(whole), records(killed)
    same_outcomes = a.keys() == b.keys() and all(
        {k: v for k, v in a[n].items() if k != "frames"} == {k: v for k, v in b[n].items() if k != "frames"}
        for n in a)
    diffs = [abs(x - y) for n in a if n in b for x, y in zip(_numbers(a[n]["frames"]), _numbers(b[n]["frames"]))]
    return {"uninterrupted_s": round(span, 1), "episodes": len(a), **facts,
            "outcomes_equal": same_outcomes and len(a) > 0,
            "per_frame_records_bitwise_equal": a == b and len(a) > 0,
            "per_frame_largest_difference": max(diffs, default=0.0)}


def _numbers(obj):
    """Every number in a nested record, in a fixed order."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, str):
        return
    if isinstance(obj, (int, float)):
        yield float(obj)
    elif isinstance(obj, dict):
        for k in sorted(obj):
            yield from _numbers(obj[k])
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "soak")
    ap.add_argument("--skip-sweep", action="store_true")
    args = ap.parse_args()
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    rng = random.Random(args.seed)
    result = {"attack": soak_attack(args.out, args.kills, rng)}
    if not args.skip_sweep:
        result["sweep"] = soak_sweep(args.out, args.kills, rng)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""EOT overhead: one optimizer step (sample conditions, render the patch into the frames, victim
forward + backward, regularizers, Adam) against the bare victim forward + backward on the same
frames and batch size. Measured interleaved in one run, so machine noise hits both alike.

    python bench/bench_eot.py [--batch 12] [--repeats 15] [--crop 256]

Goal: ratio <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.optimizer import Objective, attack_step
    from patchsim.attack.patch import Patch, SlotInfo
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile
    from patchsim.eot.scenes import build_sim_bank
    from patchsim.victims.detector import load_detector

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--crop", type=int, default=256, help="window size; 0 = full 640x384 frames")
    ap.add_argument("--frames", type=int, default=16)
    args = ap.parse_args()

    cfg = load_attack_config(None)
    cfg.scenes.scenario = str(ROOT / cfg.scenes.scenario)
    cfg.scenes.frames = args.frames
    cfg.eot.crop_px = args.crop
    cfg.batch = args.batch
    det = load_detector(cfg.victim)
    bank = build_sim_bank(cfg.scenes)
    profile = load_profile("default")
    eot = EOT(cfg.eot, profile)
    patch = Patch(SlotInfo("stop_face", bank.slot_kind, bank.slot_size_m, bank.sign_kind), cfg.patch)
    patch.set_mask(patch.sticker_mask([(0.1, 0.1), (0.45, 0.1), (0.1, 0.45), (0.45, 0.45)]))
    objective = Objective(cfg, det, eot, torch.as_tensor(profile.palette, dtype=torch.float32))
    opt = torch.optim.Adam([patch.colours], lr=cfg.lr)

    def eot_step(k: int) -> float:
        t0 = time.perf_counter()
        attack_step(objective, patch, opt, bank, eot.sample(bank, args.batch, torch.Generator().manual_seed(k)))
        return time.perf_counter() - t0

    def bare_step(k: int) -> float:
        params = eot.sample(bank, args.batch, torch.Generator().manual_seed(k))
        with torch.no_grad():
            images = eot.render(patch.image(), patch.mask, params, bank).images  # the same frames
        x = images.clone().requires_grad_(True)
        t0 = time.perf_counter()
        raw = det(x)
        raw.scores[..., det.class_indices("stop_sign")[0]].amax(-1).mean().backward()
        return time.perf_counter() - t0

    eot_step(0), bare_step(0)  # warm-up
    eot_t, bare_t, ratios = [], [], []
    for k in range(1, args.repeats + 1):
        a, b = bare_step(k), eot_step(k)
        bare_t.append(a)
        eot_t.append(b)
        ratios.append(b / a)
    out = {
        "batch": args.batch, "window_px": args.crop or "full 640x384", "threads": torch.get_num_threads(),
        "bare_victim_fwd_bwd_s": round(statistics.median(bare_t), 4),
        "eot_step_s": round(statistics.median(eot_t), 4),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_of_medians": round(statistics.median(eot_t) / statistics.median(bare_t), 3),
        "goal": "<= 1.15",
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

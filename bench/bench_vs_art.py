"""patchsim against IBM ART's AdversarialPatchPyTorch, on the same victim, frames and batch size.

    pip install -e '.[bench]'          # adversarial-robustness-toolbox
    python bench/bench_vs_art.py [--budget-s 300] [--batch 12]

Task: a full-face poster that hides the stop sign from the default detector. Both attackers get
the same training frames (patchsim's stop_poster_vanish scene bank) and the same wall-time
budget; every 25 steps each patch is scored on the same held-out conditions (patchsim's held-out
EOT samples: other scenes, full frames). ART needs an adapter for the YOLO victim (below): it
sees each frame as a 256 px window centred on the sign, scaled so the face is 64 px, and places
its square patch over the face (its own rotation and perspective jitter); its loss is patchsim's
vanish loss, so only the attack machinery differs.

Reports steps per second of each, the held-out success over time, and the wall time each needs
to reach the success rate both attain (the lower of the two finals). It also times the victim's bare
forward + backward on one batch of the same windows: one step of any attacker costs at least that,
so ``steps_per_s_ceiling_vs_art`` is the most any attacker's steps per second could exceed ART's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
WINDOW_PX = 256
FACE_PX = 64


class YoloVanishModule(torch.nn.Module):
    """Adapter: ART calls ``model(x, targets)`` in train mode for a loss dict, ``model(x)`` for detections."""

    def __init__(self, det, source_class: str = "stop_sign"):
        super().__init__()
        self.det = det
        self.source_class = source_class

    def forward(self, x: torch.Tensor, targets: torch.Tensor | None = None):
        from patchsim.attack.goals import Vanish

        raw = self.det(x)
        if self.training:
            h, w = x.shape[-2:]
            boxes = torch.zeros(x.shape[0], 4)
            for row in targets:  # (image index, class, cx, cy, w, h) normalized, ART's YOLO label format
                i = int(row[0])
                cx, cy, bw, bh = float(row[2]) * w, float(row[3]) * h, float(row[4]) * w, float(row[5]) * h
                boxes[i] = torch.tensor([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
            loss = Vanish(self.source_class).loss_of(self.det, raw, boxes.to(x.device)).mean()
            return {"loss_total": loss}
        out = []
        for d in self.det.predict(x, raw=raw):
            out.append({"boxes": d.boxes_xyxy, "scores": d.scores, "labels": d.classes.int()})
        return out

    def train(self, mode: bool = True):  # the detector itself always stays in eval mode
        self.training = mode
        return self


def art_windows(bank) -> tuple[np.ndarray, list[dict], np.ndarray]:
    """Sign-centred windows (N, 3, 256, 256) with the face scaled to 64 px, their targets and face quads."""
    xs, ys, quads = [], [], []
    for img, c in zip(bank.images.permute(0, 2, 3, 1).numpy(), bank.corners.numpy()):
        side = float(np.linalg.norm(c[1] - c[0]) + np.linalg.norm(c[3] - c[0])) / 2
        scale = FACE_PX / side
        centre = c.mean(0)
        M = np.float32([[scale, 0, WINDOW_PX / 2 - scale * centre[0]], [0, scale, WINDOW_PX / 2 - scale * centre[1]]])
        win = cv2.warpAffine(img, M, (WINDOW_PX, WINDOW_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        q = c * scale + M[:, 2]
        xs.append(win.transpose(2, 0, 1).astype(np.float32) / 255)
        box = np.concatenate([q.min(0), q.max(0)]).astype(np.float32)
        ys.append({"boxes": box[None], "labels": np.array([0]), "scores": np.array([1.0], np.float32)})
        quads.append(q)
    return np.stack(xs), ys, np.stack(quads)


def main() -> None:
    from art.attacks.evasion import AdversarialPatchPyTorch
    from art.estimators.object_detection import PyTorchYolo

    from patchsim.attack.config import load_attack_config
    from patchsim.attack.evaluate import evaluate_heldout
    from patchsim.attack.goals import Vanish
    from patchsim.attack.banks import scene_banks
    from patchsim.attack.optimizer import run_attack
    from patchsim.attack.patch import Patch, SlotInfo
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile
    from patchsim.eot.transforms import params_from_json
    from patchsim.victims.detector import load_detector

    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-s", type=float, default=300.0)
    ap.add_argument("--batch", type=int, default=12)
    ap.add_argument("--eval-every", type=int, default=25)
    ap.add_argument("--bare-repeats", type=int, default=15, help="timed victim forward + backward passes")
    ap.add_argument("--out", default="runs/bench_vs_art")
    args = ap.parse_args()
    out = ROOT / args.out
    out.mkdir(parents=True, exist_ok=True)

    cfg = load_attack_config("stop_poster_vanish")
    cfg.batch, cfg.time_budget_s, cfg.steps, cfg.eval_every = args.batch, args.budget_s, 100000, args.eval_every
    cfg.scenes.scenario = str(ROOT / cfg.scenes.scenario)
    cfg.heldout.scenario = str(ROOT / cfg.heldout.scenario)
    cfg.final_samples = cfg.eval_samples = 64
    cfg.closed_loop_seeds = 0  # the per-frame race only

    # ---- patchsim
    ours_dir = out / "patchsim"
    if ours_dir.exists():
        import shutil

        shutil.rmtree(ours_dir)
    t0 = time.perf_counter()
    ours = run_attack(cfg, ours_dir, progress=False)
    state = torch.load(ours_dir / "checkpoint.pt", weights_only=True)["state"]
    ours_curve = [(e["step"], e["heldout_success_rate"], e["optimize_s"]) for e in state["evals"]]
    ours_rate = state["step"] / (state["elapsed_s"] - state["eval_s"])
    del t0

    # ---- ART, on the same frames and victim; its own transforms draw from the global generators
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    det = load_detector(cfg.victim)
    bank, heldout_bank, _ = scene_banks(cfg)  # the shared cache: the same frames the patchsim run used
    x, y, quads = art_windows(bank)
    estimator = PyTorchYolo(model=YoloVanishModule(det), input_shape=(3, WINDOW_PX, WINDOW_PX), clip_values=(0.0, 1.0),
                            attack_losses=("loss_total",), device_type="cpu")
    loc = int(WINDOW_PX / 2 - FACE_PX / 2)
    attack = AdversarialPatchPyTorch(estimator, rotation_max=10.0, scale_min=0.5, scale_max=0.5,
                                     distortion_scale_max=0.1, learning_rate=cfg.lr, max_iter=args.eval_every,
                                     batch_size=args.batch, patch_shape=(3, FACE_PX, FACE_PX), patch_location=(loc, loc),
                                     patch_type="square", optimizer="Adam", targeted=True, verbose=False)
    steps_per_iter = math.ceil(len(x) / args.batch)
    eot = EOT(cfg.eot, load_profile("default"))
    slot = SlotInfo("stop_face", bank.slot_kind, bank.slot_size_m, bank.sign_kind)
    poster = Patch(slot, cfg.patch)
    # the held-out samples patchsim's curve was scored on (its selection set), so both curves share them
    heldout = params_from_json(json.loads((ours_dir / "heldout_params.json").read_text())["select"])
    cache: dict = {}
    art_curve, art_time = [], 0.0
    step = 0
    while art_time < args.budget_s:
        t1 = time.perf_counter()
        attack.generate(x=x, y=y)
        art_time += time.perf_counter() - t1
        step += args.eval_every * steps_per_iter
        patch = attack._patch.detach().float()
        colours = torch.nn.functional.interpolate(patch[None], size=poster.hw, mode="bilinear",
                                                  align_corners=False)[0].clamp(0, 1)
        res = evaluate_heldout(det, eot, heldout_bank, heldout, colours, poster.mask, Vanish(), clean_cache=cache)
        art_curve.append((step, round(res.success_rate, 4), round(art_time, 1)))
    art_rate = step / art_time

    # the victim alone: forward + backward on one batch of the same windows, as each step of either must do
    xb = torch.as_tensor(x[:args.batch])
    bare = []
    for _ in range(args.bare_repeats):
        xi = xb.clone().requires_grad_(True)
        t1 = time.perf_counter()
        raw = det(xi)
        raw.scores[..., det.class_indices("stop_sign")[0]].amax(-1).mean().backward()
        bare.append(time.perf_counter() - t1)
    bare_s = sorted(bare)[len(bare) // 2]

    final_ours = ours_curve[-1][1]
    final_art = art_curve[-1][1]
    target = min(final_ours, final_art)
    t_ours = next((t for _, r, t in ours_curve if r >= target), None)
    t_art = next((t for _, r, t in art_curve if r >= target), None)
    result = {
        "victim": cfg.victim, "batch": args.batch, "budget_s": args.budget_s,
        "patchsim_steps_per_s": round(ours_rate, 3), "art_steps_per_s": round(art_rate, 3),
        "steps_per_s_ratio": round(ours_rate / art_rate, 2),
        # no attacker on this victim and batch can step faster than the victim's own forward + backward:
        "bare_victim_fwd_bwd_s": round(bare_s, 4),
        "steps_per_s_ceiling_vs_art": round(1.0 / bare_s / art_rate, 2),
        "patchsim_final_heldout_success": final_ours, "art_final_heldout_success": final_art,
        "common_success_target": target,
        "patchsim_seconds_to_target": None if t_ours is None else round(t_ours, 1),
        "art_seconds_to_target": None if t_art is None else round(t_art, 1),
        "time_to_target_ratio": None if not (t_ours and t_art) else round(t_art / t_ours, 2),
        "patchsim_curve": ours_curve, "art_curve": art_curve,
        "patchsim_metrics": ours.metrics,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not k.endswith("curve")}))


if __name__ == "__main__":
    main()

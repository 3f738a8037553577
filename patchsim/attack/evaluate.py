"""Held-out evaluation of a patch: the same sampled conditions with and without the patch."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from patchsim.attack.losses import detected
from patchsim.eot.pipeline import EOT
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import select

STEER_DEG_PER_UNIT = 35.0  # steer command 1.0 = the lane-keepers' 35 degree wheel angle


@dataclass
class HeldoutResult:
    """Per-sample outcomes on held-out conditions.

    Detector goals: ``clean_hit`` / ``adv_hit`` say whether the source class was detected on the
    object; ``adv_target`` whether the target class was; ``success`` is the goal's test, for
    ``vanish`` and ``misclassify`` over the samples where the clean sign was detected.
    Steering goal: ``clean_steer_deg`` / ``adv_steer_deg`` wheel angles in degrees.
    """

    success: np.ndarray
    clean_hit: np.ndarray | None = None
    adv_hit: np.ndarray | None = None
    adv_target: np.ndarray | None = None
    clean_steer_deg: np.ndarray | None = None
    adv_steer_deg: np.ndarray | None = None
    steer_sign: float = 1.0  # +1 when the goal is to steer left, -1 right
    margin: float | None = None  # detector goals, when asked: how far the scores are past the goal (higher is better)

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else 0.0

    @property
    def selection_score(self) -> tuple[float, float]:
        """(success rate, tie-break) to rank patches, higher is better. Steering: the tie-break is the mean
        change towards the chosen side in degrees, which keeps growing after every sample has passed the
        success margin; detector goals: the score margin when it was measured (``margin``), else 0."""
        if self.clean_steer_deg is None or not len(self.success):
            return self.success_rate, self.margin or 0.0
        return self.success_rate, float(self.steer_sign * (self.adv_steer_deg - self.clean_steer_deg).mean())

    def summary(self) -> dict:
        out = {"heldout_success_rate": round(self.success_rate, 4), "heldout_samples": int(len(self.success))}
        if self.clean_hit is not None:
            out["clean_detection_rate"] = round(float(self.clean_hit.mean()), 4)
            out["adversarial_detection_rate"] = round(float(self.adv_hit.mean()), 4)
        if self.adv_target is not None:
            out["adversarial_target_rate"] = round(float(self.adv_target.mean()), 4)
        if self.clean_steer_deg is not None:
            change = self.adv_steer_deg - self.clean_steer_deg
            out["mean_steer_change_deg"] = round(float(change.mean()), 3)
            out["steer_change_std_deg"] = round(float(change.std()), 3)
            out["clean_steer_std_deg"] = round(float(self.clean_steer_deg.std()), 3)
            out["clean_steer_mean_deg"] = round(float(self.clean_steer_deg.mean()), 3)
        return out


@torch.no_grad()
def evaluate_heldout(victim, eot: EOT, bank: SceneBank, params: dict, colours: torch.Tensor, mask: torch.Tensor,
                     goal: str, source_class: str = "stop_sign", target_class: str | None = None,
                     steer_direction: str = "left", conf: float = 0.25, batch: int = 16,
                     device: str | torch.device = "cpu", clean_cache: dict | None = None,
                     margin: bool = False) -> HeldoutResult:
    """Render every sample of ``params`` with and without the patch and test the goal.

    ``clean_cache`` (a dict) keeps the clean outcomes between calls; give each params set its own.
    ``margin`` (detector goals): also measure how far past the goal the scores are, the mean over
    samples of minus the source class's best logit near the object (vanish, misclassify) plus the
    target's (misclassify, appear); it keeps growing after every sample has passed the threshold.
    """
    n = int(params["scene"].shape[0])
    clean_key = "clean"
    clean_list, adv_list, tgt_list, margin_list = [], [], [], []
    for i in range(0, n, batch):
        sub = select(params, list(range(i, min(i + batch, n))))
        adv = eot.render(colours, mask, sub, bank, device=device)
        if goal == "steer":
            adv_list.append(victim(adv.images).float().cpu() * STEER_DEG_PER_UNIT)
            if clean_cache is None or clean_key not in clean_cache:
                clean = eot.render(None, mask, sub, bank, device=device)
                clean_list.append(victim(clean.images).float().cpu() * STEER_DEG_PER_UNIT)
            continue
        src_idx = victim.class_indices(source_class)
        raw = victim(adv.images)
        dets = victim.predict(adv.images, conf=conf, raw=raw)
        if margin:
            margin_list.append(_score_margin(victim, raw, adv.boxes, goal, source_class, target_class))
        adv_list.append(detected(dets, adv.boxes, src_idx, conf))
        if target_class:
            tgt_list.append(detected(dets, adv.boxes, victim.class_indices(target_class), conf))
        if clean_cache is None or clean_key not in clean_cache:
            clean = eot.render(None, mask, sub, bank, device=device)
            clean_list.append(detected(victim.predict(clean.images, conf=conf), clean.boxes, src_idx, conf))
    if clean_cache is not None and clean_key in clean_cache:
        clean_vals = clean_cache[clean_key]
    else:
        clean_vals = torch.cat(clean_list).numpy()
        if clean_cache is not None:
            clean_cache[clean_key] = clean_vals
    adv_vals = torch.cat(adv_list).numpy()
    if goal == "steer":
        change = adv_vals - clean_vals
        sign = 1.0 if steer_direction == "left" else -1.0
        margin = max(2.0 * float(clean_vals.std()), 1.0)
        return HeldoutResult(success=(sign * change > margin), clean_steer_deg=clean_vals, adv_steer_deg=adv_vals,
                             steer_sign=sign)
    tgt = torch.cat(tgt_list).numpy() if tgt_list else None
    if goal == "vanish":
        success = ~adv_vals
    elif goal == "misclassify":
        success = tgt & ~adv_vals
    else:
        success = tgt
    if goal in ("vanish", "misclassify"):
        # a sign the detector misses even without the patch is no success of the patch
        success = success[clean_vals]
    return HeldoutResult(success=success, clean_hit=clean_vals, adv_hit=adv_vals, adv_target=tgt,
                         margin=float(torch.cat(margin_list).mean()) if margin_list else None)


def _score_margin(victim, raw, boxes: torch.Tensor, goal: str, source_class: str,
                  target_class: str | None) -> torch.Tensor:
    """(B,) minus the source class's best logit near the object, plus the target's (see evaluate_heldout)."""
    from patchsim.attack.losses import _logit, near_candidates

    near = near_candidates(raw.boxes_xyxy, boxes)
    out = torch.zeros(raw.scores.shape[0])
    if goal in ("vanish", "misclassify"):
        out -= _logit((victim.class_score(raw, source_class) * near).amax(-1)).float().cpu()
    if goal in ("misclassify", "appear") and target_class:
        out += _logit((victim.class_score(raw, target_class) * near).amax(-1)).float().cpu()
    return out

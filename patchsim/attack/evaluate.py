"""Held-out evaluation of a patch: the same sampled conditions with and without the patch, judged by
the attack's goal (:mod:`patchsim.attack.goals`)."""

from __future__ import annotations

import numpy as np
import torch

from patchsim.attack.goals import Goal, HeldoutResult
from patchsim.eot.pipeline import EOT
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import select


@torch.no_grad()
def evaluate_heldout(victim, eot: EOT, bank: SceneBank, params: dict, colours: torch.Tensor, mask: torch.Tensor,
                     goal: Goal, batch: int = 16, device: str | torch.device = "cpu",
                     clean_cache: dict | None = None, margin: bool = False) -> HeldoutResult:
    """Render every sample of ``params`` with and without the patch and test the goal.

    ``clean_cache`` (a dict) keeps the clean measurements between calls; give each params set its own.
    ``margin`` (detector goals): also measure how far past the goal the scores are (the selection's
    tie-break).
    """
    n = int(params["scene"].shape[0])
    need_clean = clean_cache is None or "clean" not in clean_cache
    clean_parts, adv_parts = [], []
    for i in range(0, n, batch):
        sub = select(params, list(range(i, min(i + batch, n))))
        adv_parts.append(goal.measure(victim, eot.render(colours, mask, sub, bank, device=device), margin))
        if need_clean:
            clean_parts.append(goal.measure(victim, eot.render(None, mask, sub, bank, device=device)))
    if need_clean:
        clean = _joined(clean_parts)
        if clean_cache is not None:
            clean_cache["clean"] = clean
    else:
        clean = clean_cache["clean"]
    return goal.result(clean, _joined(adv_parts))


def _joined(parts: list[dict[str, torch.Tensor]]) -> dict[str, np.ndarray]:
    return {k: torch.cat([p[k] for p in parts]).numpy() for k in parts[0]}

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


class HeldoutSamples:
    """The held-out samples of an attack, drawn once from the held-out bank: even frames choose the best
    patch (``select``), odd frames report it (``report``), so the reported rate is not measured on the
    conditions the patch was selected on.

    Args:
        eot: the attack's EOT (draws the conditions). bank: the held-out scene bank.
        select_samples, report_samples: how many samples each set has. seed: the attack's seed.
    """

    def __init__(self, eot: EOT, bank: SceneBank, select_samples: int, report_samples: int, seed: int):
        self.bank = bank
        n_frames = len(bank)
        select_frames = torch.arange(0, n_frames, 2)
        report_frames = torch.arange(1, n_frames, 2) if n_frames > 1 else select_frames
        gen = torch.Generator().manual_seed(seed + 99_991)
        self.select = eot.sample(bank, select_samples, gen, full_frame=True,
                                 scenes=select_frames[torch.randint(0, len(select_frames), (select_samples,),
                                                                    generator=gen)])
        self.report = eot.sample(bank, report_samples, gen, full_frame=True,
                                 scenes=report_frames[torch.randint(0, len(report_frames), (report_samples,),
                                                                    generator=gen)])
        self._clean_select: dict = {}  # the clean measurements of the selection samples, made once

    def score(self, victim, eot: EOT, goal: Goal, colours: torch.Tensor, mask: torch.Tensor, device,
              margin: bool = False) -> HeldoutResult:
        """The patch ``colours`` (3, h, w) under ``mask`` on the selection samples."""
        return evaluate_heldout(victim, eot, self.bank, self.select, colours, mask, goal, device=device,
                                clean_cache=self._clean_select, margin=margin)

    def report_result(self, victim, eot: EOT, goal: Goal, colours: torch.Tensor, mask: torch.Tensor,
                      device) -> HeldoutResult:
        """The patch on the report samples: the figures a run states."""
        return evaluate_heldout(victim, eot, self.bank, self.report, colours, mask, goal, device=device,
                                clean_cache={})

    def by_distance(self, result: HeldoutResult) -> dict[str, dict]:
        """``result`` (of the report samples) by camera-to-slot distance band, the closed loop's bands
        (:data:`~patchsim.closedloop.outcomes.DISTANCE_BANDS_M`); bands without samples, and samples of unknown
        distance (photos without one: 0), are left out."""
        from patchsim.closedloop.outcomes import BAND_NAMES, DISTANCE_BANDS_M

        dist = self.bank.distance_m[self.report["scene"]].cpu().numpy()
        out = {}
        for (lo, hi), name in zip(DISTANCE_BANDS_M, BAND_NAMES):
            part = (dist > 0) & (dist >= lo) & (dist < hi)
            if part.any():
                out[name] = result.part_summary(part)
        return out

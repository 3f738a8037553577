"""The objective of an attack: the victim it attacks, and the loss of one EOT batch (the goal's loss
plus the regularizers: total variation, non-printability, similarity to the original face)."""

from __future__ import annotations

import contextlib

import torch

from patchsim.attack.config import AttackConfig
from patchsim.attack.patch import Patch, total_variation
from patchsim.eot.pipeline import EOT, Background
from patchsim.eot.printer import non_printability
from patchsim.eot.scenes import SceneBank


def load_attack_victim(cfg: AttackConfig):
    """The victim ``cfg.victim`` names, checked against the goal (a ConfigError names a wrong class)."""
    from patchsim.victims.registry import load_victim

    victim = load_victim(cfg.victim, device=cfg.device)
    cfg.make_goal().check_victim(victim, cfg.victim)
    return victim


def step_generator(seed: int, step: int) -> torch.Generator:
    """The generator of step ``step``'s EOT samples (when backgrounds are not reused)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step + 17)


def autocast_for(cfg: AttackConfig):
    """float16 autocast for the victim on CUDA when ``cfg.amp``; nothing on the CPU."""
    if cfg.amp and torch.device(cfg.device).type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class Objective:
    """Loss of one EOT batch for the configured goal and regularizers."""

    def __init__(self, cfg: AttackConfig, victim, eot: EOT, palette: torch.Tensor):
        self.cfg, self.victim, self.eot, self.palette = cfg, victim, eot, palette
        self.goal = cfg.make_goal()

    def __call__(self, patch: Patch, bank: SceneBank, params: dict,
                 background: Background | None = None) -> tuple[torch.Tensor, dict]:
        """(scalar loss, its parts as floats: ``loss``, ``attack``, ``tv``, ``nps``)."""
        cfg = self.cfg
        img = patch.image()
        seen = self.eot.printed(img)  # once for the render and the printability score
        batch = self.eot.render(seen, patch.mask, params, bank, device=cfg.device, background=background,
                                printed=True)
        with autocast_for(cfg):
            per = self.goal.loss(self.victim, batch)
        attack = per.float().mean()
        tv = total_variation(img, patch.mask)
        nps = non_printability(seen, self.palette, patch.mask)
        loss = attack + cfg.tv_weight * tv + cfg.nps_weight * nps
        if cfg.similarity_weight:
            sim = (((img - patch.base) ** 2) * patch.mask).sum() / (3 * patch.mask.sum() + 1e-8)
            loss = loss + cfg.similarity_weight * sim
        return loss, {"loss": loss.item(), "attack": attack.item(), "tv": tv.item(), "nps": nps.item()}


def attack_step(objective: Objective, patch: Patch, opt: torch.optim.Optimizer, bank: SceneBank,
                params: dict, background: Background | None = None) -> dict:
    """One optimization step on one EOT batch (``background``: its clean frames, when reused); the colours
    stay in [0, 1]. Returns the loss parts."""
    loss, parts = objective(patch, bank, params, background)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():
        patch.colours.clamp_(0, 1)
    return parts

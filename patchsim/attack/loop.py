"""The optimization loop of an attack: Adam on one patch's colours over EOT batches, the held-out score
every ``eval_every`` steps, the best patch (and the best few, for a closed-loop choice), and the rules
that stop it (steps, time budget, target success, plateau).

It writes no files: ``run_attack`` (:mod:`patchsim.attack.optimizer`) checkpoints its ``state_dict()``
from the ``on_step`` hook, and a training loop can drive it step by step (:meth:`AttackLoop.step`,
:meth:`AttackLoop.evaluate`)::

    loop = AttackLoop(cfg, objective, patch, bank, HeldoutSamples(eot, heldout_bank, 64, 200, cfg.seed))
    while loop.stop_reason() is None:      # or: stopped_by = loop.run()
        loop.step()
        if loop.eval_due():
            loop.evaluate()
    patch.colours.data.copy_(loop.best_image())

Each step's EOT samples come from a generator seeded with (seed, step) or, when backgrounds are
reused, from one seeded with (seed, pool number) that draws all the pool's steps; the state holds
every piece of progress, so a resumed loop ends with the same patch as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import torch

from patchsim.attack.config import AttackConfig
from patchsim.attack.evaluate import HeldoutSamples
from patchsim.attack.objective import Objective, attack_step, step_generator
from patchsim.attack.patch import Patch
from patchsim.eot.pool import SAMPLING_SCHEME, BackgroundPool
from patchsim.eot.scenes import SceneBank
from patchsim.errors import CheckpointError


def new_state() -> dict:
    """The progress of a loop that has not started: what a checkpoint keeps besides the tensors."""
    return {"step": 0, "best_score": -1.0, "best_tiebreak": -math.inf, "best_step": -1, "best_colours": None,
            "history": [], "evals": [], "elapsed_s": 0.0, "eval_s": 0.0, "positions": None,
            "pool_sampling": SAMPLING_SCHEME}


class AttackLoop:
    """Adam over EOT batches of ``patch``, scored on ``heldout`` (None: no held-out scoring; the last patch
    is the best).

    Args:
        cfg: the attack's settings (steps, batch, lr and its schedule, eval period, stop rules, seed).
        objective: the loss of one EOT batch. patch: the patch to optimize (its colours are the parameters).
        bank: the training scene bank. heldout: the held-out samples.
        candidates: how many of the best patches to keep (``state["candidates"]``), at least
            ``max(eval_every, steps / (2 candidates))`` steps apart, for a closed-loop choice.
    """

    def __init__(self, cfg: AttackConfig, objective: Objective, patch: Patch, bank: SceneBank,
                 heldout: HeldoutSamples | None, candidates: int = 1):
        self.cfg, self.objective, self.patch, self.bank, self.heldout = cfg, objective, patch, bank, heldout
        self.n_candidates = candidates
        self.opt = torch.optim.Adam([patch.colours], lr=cfg.lr)
        self.pool = BackgroundPool.for_steps(objective.eot, bank, cfg.batch, cfg.seed, cfg.device)
        self.state = new_state()

    def state_dict(self) -> dict:
        """Everything a resumed loop needs: ``colours``, ``mask``, ``optimizer``, ``state`` (the live progress
        dict, not a copy: save it, or deep-copy it to keep a snapshot in memory)."""
        return {"colours": self.patch.colours.detach().clone(), "mask": self.patch.mask.detach().clone(),
                "optimizer": self.opt.state_dict(), "state": self.state}

    def load_state_dict(self, ck: dict) -> None:
        """Continue from ``ck`` (a :meth:`state_dict`, saved and loaded).

        Raises:
            CheckpointError: its background pool drew samples another way than this patchsim's, so the
                resumed run would not repeat the uninterrupted one.
        """
        state = ck["state"]
        scheme = state.get("pool_sampling", 1)  # checkpoints from before the scheme was recorded: 1
        if self.pool is not None and scheme != SAMPLING_SCHEME:
            raise CheckpointError(f"written by a patchsim whose background pool drew its samples another way "
                                  f"(scheme {scheme}, now {SAMPLING_SCHEME}); resuming would not repeat the run, "
                                  f"so start it again with a new --out")
        # a checkpoint from before the tie-break: its best patch keeps winning ties, as it did then
        state.setdefault("best_tiebreak", math.inf if state["best_step"] >= 0 else -math.inf)
        self.patch.colours.data.copy_(ck["colours"])
        self.patch.mask = ck["mask"].to(self.patch.mask)  # already clipped to the outline when it was saved
        self.opt.load_state_dict(ck["optimizer"])
        self.state = state

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: constant, or cosine from ``lr`` down to a tenth of it."""
        cfg = self.cfg
        if cfg.lr_schedule == "constant":
            return cfg.lr
        return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step, cfg.steps) / cfg.steps)))

    def step(self) -> dict:
        """One step on the next EOT batch; returns the loss parts."""
        t0 = time.perf_counter()
        cfg, state = self.cfg, self.state
        step = state["step"]
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        if self.pool is not None:
            params, background = self.pool.draw(step, self.patch.hw)
        else:
            params, background = self.objective.eot.sample(self.bank, cfg.batch, step_generator(cfg.seed, step)), None
        parts = attack_step(self.objective, self.patch, self.opt, self.bank, params, background)
        state["step"] = step + 1
        state["history"].append({"step": step + 1, **{k: round(v, 5) for k, v in parts.items()}})
        state["elapsed_s"] += time.perf_counter() - t0
        return parts

    def eval_due(self) -> bool:
        """Whether the step just taken is one the held-out score is taken after: every ``eval_every`` steps
        and the last (never without held-out samples)."""
        step = self.state["step"]
        return self.heldout is not None and (step % self.cfg.eval_every == 0 or step == self.cfg.steps)

    def evaluate(self) -> dict:
        """Score the current patch on the held-out selection samples; keep it if it is the best (the success
        rate first, then the goal's tie-break) or one of the best few. Returns the evaluation's entry."""
        if self.heldout is None:
            raise ValueError("this AttackLoop has no held-out samples to score the patch on")
        t0 = time.perf_counter()
        cfg, state, obj = self.cfg, self.state, self.objective
        image = self.patch.image().detach().clone()
        res = self.heldout.score(obj.victim, obj.eot, obj.goal, image, self.patch.mask, cfg.device,
                                 margin=cfg.select_by_margin)
        score, tie = res.selection_score
        step = state["step"]
        entry = {"step": step, "heldout_success_rate": round(score, 4),
                 "optimize_s": round(state["elapsed_s"] - state["eval_s"], 2)}
        if res.tiebreak_name == "steer_change_to_side_deg" or cfg.select_by_margin:
            # steering: the mean change, signed towards steer_direction; detectors: the mean logit past the goal
            entry[res.tiebreak_name] = round(tie, 3)
        state["evals"].append(entry)
        if (score, tie) > (state["best_score"], state["best_tiebreak"]):
            state["best_score"], state["best_tiebreak"], state["best_step"] = score, tie, step
            state["best_colours"] = image
        if self.n_candidates > 1:
            state["candidates"] = keep_candidates(
                state.get("candidates", []), {"step": step, "score": score, "tie": tie, "colours": image},
                self.n_candidates, max(cfg.eval_every, cfg.steps // (2 * self.n_candidates)))
        spent = time.perf_counter() - t0
        state["eval_s"] += spent
        state["elapsed_s"] += spent
        return entry

    def stop_reason(self) -> str | None:
        """Why the loop should stop now, or None: ``target_success``, ``plateau``, ``time_budget`` or ``steps``
        (checked in that order). The time budget counts the time spent in :meth:`step` and :meth:`evaluate`."""
        cfg, state = self.cfg, self.state
        if cfg.target_success is not None and state["best_score"] >= cfg.target_success:
            return "target_success"
        if cfg.plateau_evals is not None and state["best_step"] >= 0 and \
                state["step"] - state["best_step"] >= cfg.plateau_evals * cfg.eval_every:
            return "plateau"
        if cfg.time_budget_s is not None and state["elapsed_s"] >= cfg.time_budget_s:
            return "time_budget"
        if state["step"] >= cfg.steps:
            return "steps"
        return None

    def run(self, on_step: Callable[[dict, dict | None], None] | None = None) -> str:
        """Step (and evaluate every ``eval_every`` steps and at the last) until a stop rule holds; returns it,
        also kept as ``state["stopped_by"]``. ``on_step(parts, eval_entry or None)`` runs after each step,
        before the stop rules (a run directory checkpoints there)."""
        cfg, state = self.cfg, self.state
        stopped = "steps"
        while state["step"] < cfg.steps:
            parts = self.step()
            entry = self.evaluate() if self.eval_due() else None
            if on_step is not None:
                on_step(parts, entry)
            reason = self.stop_reason()
            if reason is not None:
                stopped = reason
                break
        state["stopped_by"] = stopped
        return stopped

    def best_image(self) -> torch.Tensor:
        """(3, h, w) the best patch's colours so far (the current ones before any evaluation)."""
        best = self.state["best_colours"]
        return best if best is not None else self.patch.image().detach()


def keep_candidates(kept: list[dict], new: dict, n: int, min_gap_steps: int) -> list[dict]:
    """The ``n`` best patches by held-out (score, tie-break), at least ``min_gap_steps`` apart: of two
    nearer than that the better stays, so the candidates come from different stages of the run
    (neighbouring steps give nearly the same patch, which a drive cannot tell apart)."""
    rank = (new["score"], new["tie"])
    near = [c for c in kept if abs(c["step"] - new["step"]) < min_gap_steps]
    if any((c["score"], c["tie"]) >= rank for c in near):
        return kept
    rest = [c for c in kept if all(c is not d for d in near)] + [new]
    return sorted(rest, key=lambda c: (c["score"], c["tie"]), reverse=True)[:n]

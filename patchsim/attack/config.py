"""Attack configuration (``patchsim attack --config FILE``); the shipped defaults live in ``patchsim/defaults``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchsim.attack.goals import GOALS, Goal, make_goal
from patchsim.attack.patch import PatchConfig
from patchsim.attack.rollout import RolloutConfig
from patchsim.attack.shipped import DEFAULTS_DIR
from patchsim.config import FieldError, check_device, load_yaml, param
from patchsim.eot.pipeline import EOTConfig
from patchsim.eot.scenes import SceneConfig


@dataclass
class AttackConfig:
    name: str = param("stop_sticker_vanish", help="label for reports")
    victim: str = param("detector:default", help="victim spec: detector:NAME, lanekeeper:NAME or a checkpoint path")
    goal: str = param("vanish", help="vanish, misclassify, appear (detectors), steer or depart (lane-keepers)")
    source_class: str = param("stop_sign", help="class to hide or change")
    target_class: str | None = param(None, help="class to produce (misclassify, appear)")
    steer_direction: str = param("left", help="left or right (steer, depart)")
    rollout: RolloutConfig = param(default_factory=RolloutConfig, help="drives rolled out by the depart goal")
    scenes: SceneConfig = param(default_factory=SceneConfig)
    heldout: SceneConfig = param(default_factory=lambda: SceneConfig(frames=48, seed=1000))
    patch: PatchConfig = param(default_factory=PatchConfig)
    eot: EOTConfig = param(default_factory=EOTConfig)
    printer_profile: str = param("default", help="printer profile name or JSON path")
    steps: int = param(400, range=(1, 1_000_000), help="optimization steps")
    batch: int = param(12, range=(1, 4096), help="EOT samples per step")
    lr: float = param(0.03, range=(1e-5, 1.0), help="Adam learning rate (colour units per step)")
    lr_schedule: str = param("cosine", help="cosine or constant")
    tv_weight: float = param(2.5, range=(0.0, 1000.0), help="total variation weight (Thys et al.: 2.5)")
    nps_weight: float = param(0.01, range=(0.0, 1000.0), help="non-printability weight (Thys et al.: 0.01)")
    similarity_weight: float = param(0.0, range=(0.0, 1000.0), help="pull towards the original face colours")
    mask_search_steps: int = param(40, range=(0, 100000), help="poster steps that find sticker positions")
    eval_every: int = param(25, range=(1, 1_000_000), help="held-out evaluation period (steps)")
    eval_samples: int = param(64, range=(1, 100000), help="held-out samples for best-patch selection")
    final_samples: int = param(200, range=(1, 100000), help="held-out samples for the reported metrics")
    checkpoint_every: int = param(25, range=(1, 1_000_000), help="checkpoint period (steps)")
    time_budget_s: float | None = param(None, unit="s", range=(1.0, None),
                                        help="stop optimizing after this long (time in steps and held-out checks)")
    target_success: float | None = param(None, range=(0.0, 1.0), help="stop once held-out success reaches this")
    plateau_evals: int | None = param(None, range=(1, 100000),
                                      help="stop when this many held-out evaluations in a row found no better patch")
    closed_loop_seeds: int = param(0, range=(0, 10000),
                                   help="after optimizing, drive the held-out scenario this many seeds clean and "
                                        "patched (the episode engine) and report the outcomes in patch.json")
    closed_loop_candidates: int = param(1, range=(1, 20),
                                        help="with closed_loop_seeds: drive this many of the best held-out patches "
                                             "and keep the one whose drives fail as the goal wants most often")
    loss_space: str = param("logit", help="detector losses on hinged logits (logit) or on probabilities (prob)")
    conf_threshold: float = param(0.25, range=(0.0, 1.0), help="detection score threshold for success tests")
    select_by_margin: bool = param(False, help="detector goals: among patches with the same held-out success rate, "
                                               "keep the one whose scores are furthest past the goal")
    score_floor: float = param(0.05, range=(1e-4, 0.5),
                               help="a hidden class's score needs no push below this (logit loss space)")
    class_competition: bool = param(False, help="vanish, misclassify: the hidden class also counts as hidden where "
                                                "another class outscores it on the same candidate (the decoding "
                                                "keeps one class per box), so the loss may lift another class "
                                                "instead of pushing the hidden one below the threshold")
    seed: int = param(0, range=(0, 2**31 - 1), help="fixes every sample and initialization")
    device: str = param("cpu", help="cpu, cuda or cuda:N")
    amp: bool = param(True, help="float16 autocast for the victim on CUDA")

    def __post_init__(self) -> None:
        if self.loss_space not in ("logit", "prob"):
            raise FieldError("loss_space", f"loss_space must be logit or prob, not {self.loss_space!r}")
        if self.goal not in GOALS:  # the goal classes, one per goal
            raise FieldError("goal", f"goal must be one of {', '.join(GOALS)}, not {self.goal!r}")
        if getattr(GOALS[self.goal], "wants_target", False) and not self.target_class:
            raise FieldError("target_class", f"goal {self.goal!r} needs target_class")
        if self.steer_direction not in ("left", "right"):
            raise FieldError("steer_direction", "steer_direction must be left or right")
        if self.lr_schedule not in ("cosine", "constant"):
            raise FieldError("lr_schedule", "lr_schedule must be cosine or constant")
        check_device(self.device)
        if self.class_competition and not getattr(GOALS[self.goal], "hides_source", False):
            raise FieldError("class_competition", f"goal {self.goal!r} hides no class: class_competition applies to "
                                                  "vanish and misclassify")
        if self.batch % self.eot.drive_frames:
            raise FieldError("eot.drive_frames", f"a batch of {self.batch} samples does not split into drives of "
                                                 f"{self.eot.drive_frames} frames: make batch a multiple of it")
        if self.eot.drive_frames > 1:
            if self.scenes.photos:
                raise FieldError("eot.drive_frames", "photos are not drives: drawing by drive needs simulator scenes")
            if not getattr(GOALS[self.goal], "hides_source", False):
                raise FieldError("eot.drive_frames", f"goal {self.goal!r} has no drive-level loss (vanish and misclassify "
                                                     "have): leave drive_frames at 1")
            if self.scenes.frames_per_seed < self.eot.drive_frames:
                raise FieldError("eot.drive_frames", f"drives of {self.eot.drive_frames} frames need scenes.frames_per_seed "
                                                     f">= {self.eot.drive_frames} (it is {self.scenes.frames_per_seed})")
        if self.heldout.slot != self.scenes.slot:
            raise FieldError("heldout.slot", f"held-out slot {self.heldout.slot!r} differs from the training slot "
                                             f"{self.scenes.slot!r}")
        if self.scenes.photos and self.heldout.photos == self.scenes.photos:
            raise FieldError("heldout.photos", "held-out photos must be other photos than the training ones")
        if not self.scenes.photos and self.heldout.scenario == self.scenes.scenario \
                and self.heldout.seed == self.scenes.seed and self.heldout.randomize == self.scenes.randomize:
            raise FieldError("heldout.seed", "the held-out scenes repeat the training scenes: give them another seed")

    @property
    def victim_kind(self) -> str:
        """``detector`` or ``lanekeeper``: what the goal attacks."""
        return GOALS[self.goal].victim_kind

    def make_goal(self) -> Goal:
        """The goal object with this config's classes, direction, threshold and loss settings."""
        return make_goal(self.goal, self.source_class, self.target_class, self.steer_direction, self.conf_threshold,
                         self.loss_space, self.score_floor, self.rollout, self.class_competition)


def load_attack_config(path: str | Path | None) -> AttackConfig:
    """A config file, a shipped default by name (``stop_sticker_vanish``), or the default attack."""
    if path is None:
        path = DEFAULTS_DIR / "stop_sticker_vanish.yaml"
    p = Path(path)
    if not p.suffix and not p.exists():
        p = DEFAULTS_DIR / f"{p}.yaml"
    return load_yaml(p, AttackConfig)

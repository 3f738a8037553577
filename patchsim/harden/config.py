"""Hardening configuration (``patchsim harden detector --config FILE``, ``patchsim harden eval --config FILE``):
YAML files checked key by key like attack and scenario files; the defaults are the dataclasses' own."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchsim.config import FieldError, check_device, load_yaml, param
from patchsim.harden.attacker import AttackerConfig


@dataclass
class RoundAttack:
    """One attack made against the current model in every round (its patches join the pool)."""

    config: str = param("stop_sticker_vanish", help="attack YAML or shipped name")
    steps: int = param(150, range=(1, 1_000_000), help="optimization steps in a round")
    time_budget_s: float | None = param(120.0, unit="s", range=(1.0, None), help="stop optimizing after this long")


def _default_attacks() -> list[RoundAttack]:
    return [RoundAttack("stop_sticker_vanish", 150, 120.0), RoundAttack("stop_poster_vanish", 100, 90.0),
            RoundAttack("stop_to_speed_limit", 100, 90.0)]


@dataclass
class HardenDetectorConfig:
    baseline: str = param("detector:default", help="the detector to harden: detector:NAME or a checkpoint path")
    data: str = param("runs/data/detector/data.yaml", help="data.yaml written by `patchsim data generate`")
    rounds: int = param(6, range=(1, 100), help="attack-then-train rounds")
    attacks: list[RoundAttack] = param(default_factory=_default_attacks, help="attacks made in every round")
    attacker: AttackerConfig = param(default_factory=AttackerConfig)
    attacker_attack: str = param("stop_sticker_vanish",
                                 help="attack config whose scenes, EOT and goal the attacker network trains on")
    share: float = param(0.5, range=(0.0, 1.0), help="probability that an attacked sign face in a training "
                                                     "image carries a patch")
    random_share: float = param(0.3, range=(0.0, 1.0), help="of the patched faces, the share that get random "
                                                            "sticker colours in a random sticker layout (the "
                                                            "attacker's stickers, sticker_side_m, max_coverage)")
    attacker_share: float = param(0.5, range=(0.0, 1.0), help="of the other patched faces, the share that get an "
                                                              "attacker network patch (the rest: the pool's)")
    gain_jitter: float = param(0.15, range=(0.0, 0.9), help="light on a pasted patch varies by up to this share")
    epochs_per_round: int = param(2, range=(1, 1000), help="fine-tuning epochs in a round")
    fraction: float = param(1.0, range=(0.01, 1.0), help="share of the training images used")
    lr: float = param(0.0002, range=(1e-6, 0.1), help="fine-tuning learning rate (AdamW, no warm-up; cosine to a "
                                                       "tenth of it over each round)")
    close_mosaic: bool = param(True, help="the last epoch of each round without mosaic, as the baseline's training "
                                          "ended (with epochs_per_round >= 2)")
    batch: int = param(32, range=(1, 1024), help="batch size")
    imgsz: int = param(320, range=(64, 4096), help="training image size (the crops' side)")
    workers: int = param(2, range=(0, 64), help="data loader processes")
    seed: int = param(0, range=(0, 2**31 - 1), help="seeds the attacks, the attacker network and the training")
    device: str = param("cpu", help="cpu, cuda or cuda:N (Ultralytics' trainer also takes 0,1 for DDP)")

    def __post_init__(self) -> None:
        if not self.device.replace(",", "").isdigit():
            check_device(self.device)
        if not self.attacks:
            raise FieldError("attacks", "attacks must name at least one attack (its patches make the pool)")


@dataclass
class HardenEvalConfig:
    model: str = param(help="the hardened model: a checkpoint path, detector:NAME or lanekeeper:NAME")
    baseline: str = param("detector:default", help="the model it was hardened from")
    data: str = param("runs/data/detector/data.yaml", help="detectors: data.yaml whose test split gives clean mAP50")
    attacks: list[str] | None = param(None, help="attacks made afresh against each model with the same configuration "
                                                 "(default: stop_sticker_vanish for detectors, road_depart_pilotnet "
                                                 "for lane-keepers)")
    attack_steps: int | None = param(None, range=(1, 1_000_000), help="override the attacks' steps (both models)")
    attack_time_budget_s: float | None = param(None, unit="s", range=(1.0, None),
                                               help="override the attacks' time budget (both models)")
    attacker: AttackerConfig = param(default_factory=AttackerConfig)
    sweep: str | None = param("auto", help="held-out closed-loop sweep, each model with its own adaptive patch; "
                                           "auto: the shipped held-out sweep for the model's kind; null skips it")
    sweep_samples: int = param(20, range=(1, 10000), help="held-out conditions in the sweep")
    recall_seeds: int = param(10, range=(0, 1000), help="detectors: stop-sign recall by distance, scenes (0 skips)")
    clean_seeds: int = param(10, range=(1, 1000), help="lane-keepers: clean drives per scenario (straight, curve)")
    workers: int = param(2, range=(1, 64), help="closed-loop episodes in parallel")
    seed: int = param(0, range=(0, 2**31 - 1), help="seed of the attacks and the attacker networks")
    device: str = param("cpu", help="cpu, cuda or cuda:N")

    def __post_init__(self) -> None:
        check_device(self.device)
        if self.attacks is not None and not self.attacks:
            raise FieldError("attacks", "attacks must name at least one attack")


def load_harden_config(path: str | Path | None, cls: type = HardenDetectorConfig, **overrides):
    """A config file (or the defaults), with ``overrides`` checked like the same keys in the file."""
    from patchsim.config import from_dict, to_dict

    cfg = load_yaml(path, cls) if path is not None else None
    data = {**(to_dict(cfg) if cfg is not None else {}), **{k: v for k, v in overrides.items() if v is not None}}
    return from_dict(cls, data, str(path) if path is not None else "command line")

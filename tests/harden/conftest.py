"""A small detector data set and a small sticker attack for the hardening tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="session")
def small_detector_data(tmp_path_factory) -> Path:
    """data.yaml of a detector data set of 30 training scenes (about 240 crops)."""
    from patchsim.data.generate import DetectorDataConfig, generate_detector_dataset

    out = tmp_path_factory.mktemp("det_data")
    generate_detector_dataset(DetectorDataConfig(train_scenes=30, val_scenes=3, test_scenes=3, frames_per_scene=8),
                              out, progress=False)
    return out / "data.yaml"


@pytest.fixture(scope="session")
def small_sticker_attack(tmp_path_factory, near_stop_scenario) -> Path:
    """The shipped sticker attack on the short approach, with small banks and few steps."""
    from patchsim.attack.config import load_attack_config
    from patchsim.config import to_dict

    cfg = to_dict(load_attack_config("stop_sticker_vanish"))
    for bank in ("scenes", "heldout"):
        cfg[bank].update(scenario=str(near_stop_scenario), distance_m=[6.0, 30.0], frames=16, frames_per_seed=4)
    cfg["eot"].update(crop_px=160, background_pool=16, background_reuse=4.0)
    cfg.update(name="small_stickers", batch=8, steps=30, eval_every=10, checkpoint_every=10, eval_samples=24,
               final_samples=64, mask_search_steps=10, time_budget_s=None, plateau_evals=None, closed_loop_seeds=0)
    path = tmp_path_factory.mktemp("attacks") / "small_stickers.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def small_road_attack(tmp_path_factory) -> Path:
    """The shipped road-marking attack with small banks and few steps."""
    from patchsim.attack.config import load_attack_config
    from patchsim.config import to_dict

    cfg = to_dict(load_attack_config("road_steer_pilotnet"))
    for bank in ("scenes", "heldout"):
        cfg[bank].update(frames=4, frames_per_seed=4)
    cfg.update(name="small_road", batch=4, steps=6, eval_every=3, checkpoint_every=3, eval_samples=4,
               final_samples=8, time_budget_s=None)
    path = tmp_path_factory.mktemp("attacks") / "small_road.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def small_poster_attack(tmp_path_factory, near_stop_scenario) -> Path:
    """The shipped full-face poster attack on the short approach, with small banks and few steps."""
    from patchsim.attack.config import load_attack_config
    from patchsim.config import to_dict

    cfg = to_dict(load_attack_config("stop_poster_vanish"))
    for bank in ("scenes", "heldout"):
        cfg[bank].update(scenario=str(near_stop_scenario), distance_m=[6.0, 32.0], distance_sampling="log",
                         frames=16, frames_per_seed=4)
    cfg["eot"].update(crop_px=160, background_pool=12, background_reuse=4.0)
    cfg.update(name="small_poster", batch=8, steps=40, eval_every=20, checkpoint_every=20, eval_samples=16,
               final_samples=48, time_budget_s=None, closed_loop_seeds=0)
    path = tmp_path_factory.mktemp("attacks") / "small_poster.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path

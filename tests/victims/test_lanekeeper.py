"""Lane-keepers: closed loop in lane, differentiability, checkpoint errors."""

import pytest
import torch

from patchsim.errors import CheckpointError, ShapeError
from patchsim.sim.scenario import load_scenario
from patchsim.victims.evaluate import drive_closed_loop
from patchsim.victims.lanekeeper import load_lanekeeper


@pytest.mark.parametrize("name", ["pilotnet", "lanenet"])
def test_lanekeeper_stays_in_lane_on_a_short_straight(name, sim):
    model = load_lanekeeper(f"lanekeeper:{name}")
    sc = load_scenario("scenarios/lane_keep_straight.yaml")
    sim.labels_mode = False
    try:
        result = drive_closed_loop(model, sc, seed=2, distance_m=60.0, sim=sim)
    finally:
        sim.labels_mode = True
    assert result.distance_m >= 59
    assert not result.departed
    assert result.mean_abs_offset_m < 0.35


@pytest.mark.parametrize("name", ["pilotnet", "lanenet"])
def test_steering_is_differentiable_in_the_pixels(name):
    model = load_lanekeeper(f"lanekeeper:{name}")
    x = torch.rand(1, 3, 384, 640, requires_grad=True)
    model(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_wrong_inputs_and_files(tmp_path):
    model = load_lanekeeper("lanekeeper:pilotnet")
    with pytest.raises(ShapeError, match="640x384"):
        model(torch.rand(1, 3, 100, 100))
    with pytest.raises(CheckpointError, match="not found"):
        load_lanekeeper(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    torch.save({"format": "something-else"}, bad)
    with pytest.raises(CheckpointError, match="not a patchsim lane-keeper"):
        load_lanekeeper(bad)


def test_cast_shadow_augmentation_darkens_part_of_some_views_only():
    from patchsim.victims.train_lanekeeper import cast_shadows

    x = torch.full((64, 3, 66, 200), 0.6)
    assert torch.equal(cast_shadows(x, 0.0, torch.Generator().manual_seed(0)), x)
    y = cast_shadows(x, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(y, cast_shadows(x, 0.5, torch.Generator().manual_seed(0)))  # seeded
    shaded = (y < 0.59).flatten(1).float().mean(1)  # share of darkened values per view
    assert 0.2 < float((shaded > 0).float().mean()) < 0.8  # about half the views get a shadow
    assert float(shaded.max()) < 1.0  # a shadow covers part of a view, never all of it
    assert float(y.min()) >= 0.6 * 0.3 * 0.95 - 1e-6 and float(y.max()) <= 0.6 * 1.08 + 1e-6

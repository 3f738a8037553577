"""Scene banks rendered by the built-in simulator, for a sign face and for a road slot."""

import numpy as np
import pytest

from patchsim.eot.scenes import SceneConfig, build_sim_bank


@pytest.mark.parametrize("scenario,slot,distance", [
    ("scenarios/stop_sign_approach.yaml", "stop_face", (8.0, 20.0)),
    ("scenarios/lane_keep_straight.yaml", "road_patch", (8.0, 16.0)),  # hidden until a patch is set
])
def test_bank_frames_hold_the_slot_fully_in_view(scenario, slot, distance):
    bank = build_sim_bank(SceneConfig(scenario=scenario, slot=slot, frames=2, frames_per_seed=2, seed=3,
                                      distance_m=distance))
    assert tuple(bank.images.shape) == (2, 3, 384, 640)
    corners = bank.corners.numpy()
    assert (corners >= 0).all() and (corners[..., 0] <= 640).all() and (corners[..., 1] <= 384).all()
    # the shading of the slot was measured from its own pixels: finite, positive, not all clamped
    shade = bank.shade.float().numpy()
    assert np.isfinite(shade).all() and shade.min() > 0
    lo, hi = distance
    assert ((bank.distance_m.numpy() > lo - 2.5) & (bank.distance_m.numpy() < hi + 2.5)).all()

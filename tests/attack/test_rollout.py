"""Rolled-out drives (patchsim.attack.rollout): the re-projected view matches what the simulator renders
from the moved pose, the car moves as the simulator's bicycle does, and the depart goal's loss reaches
the marking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from patchsim.attack.rollout import RolloutConfig, pose_matrix, roll_out, view_from
from patchsim.config import FieldError
from patchsim.eot.scenes import _ground
from patchsim.sim.base import Control
from patchsim.sim.scenario import load_scenario
from patchsim.sim.vehicle import KinematicBicycle, VehicleState


def _image(frame) -> torch.Tensor:
    return torch.from_numpy(frame.image).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def start(sim):
    sc = load_scenario("scenarios/lane_keep_straight.yaml")
    sim.reset(sc, seed=3)
    s0, lat0, h0 = 30.0, 0.2, math.radians(1.5)
    f0 = sim.set_ego_pose(s0, lat0, h0, 10.0)
    g = _ground(sim, f0, sim.layout.slots["road_line_patch"], lat0, h0)
    return sim, (s0, lat0, h0), _image(f0), g


@pytest.mark.parametrize("ds, dl, dh_deg", [(3.0, 0.0, 0.0), (4.0, 0.4, 0.0), (5.0, -0.3, 3.0)])
def test_the_reprojected_view_matches_the_render_from_the_moved_pose(start, ds, dl, dh_deg):
    sim, (s0, lat0, h0), img0, g = start
    f1 = sim.set_ego_pose(s0 + ds, lat0 + dl, h0 + math.radians(dh_deg), 10.0)
    c, s = math.cos(-h0), math.sin(-h0)  # the road displacement in the start car's frame
    pose = pose_matrix(torch.tensor([c * ds - s * dl]), torch.tensor([s * ds + c * dl]),
                       torch.tensor([math.radians(dh_deg)]))
    view = view_from(img0, torch.tensor(g["H"], dtype=torch.float32)[None], pose)
    road = slice(int(0.55 * img0.shape[-2]), None)  # the rows the lane-keepers look at, all road
    img1 = _image(f1)

    def err(a):  # over 4 x 4 pixel blocks: the lane lines' places, not the asphalt's grain
        return torch.nn.functional.avg_pool2d((a - img1)[..., road, :], 4).abs().mean().item()

    assert err(view) < 0.4 * err(img0), (err(view), err(img0))


def test_a_constant_steer_moves_the_car_as_the_simulators_bicycle_does(start):
    _, (_, lat0, h0), img0, g = start
    ground = {k: torch.tensor(np.array([v]), dtype=torch.float32) for k, v in g.items()}
    steer, speed, dt, steps = 0.05, 12.0, 0.1, 10
    r = roll_out(lambda images: torch.full((images.shape[0],), steer), img0, ground, torch.tensor([speed]), steps, dt)
    bike = KinematicBicycle(g["wheelbase_m"], g["max_steer_rad"], drag_per_s=0.0)
    st = VehicleState(0.0, 0.0, h0, speed)
    for _ in range(steps):
        st = bike.step(st, Control(steer, 0.0, 0.0), dt)
        st.speed_mps = speed
    assert r.lane_offset_m.shape == (1, steps + 1)
    assert float(r.lane_offset_m[0, 0]) == pytest.approx(lat0)
    # Euler steps against the exact arc: within 5 cm over 12 m
    assert float(r.lane_offset_m[0, -1]) == pytest.approx(lat0 + st.y_m, abs=0.05)
    assert float(r.lane_offset_m[0, -1]) > lat0 + 0.5  # steering left moved it left


def test_the_depart_loss_reaches_the_marking_through_every_step(start):
    from patchsim.attack.goals import Depart
    from patchsim.eot.pipeline import EOTBatch

    _, _, img0, g = start
    ground = {k: torch.tensor(np.array([v, v]), dtype=torch.float32) for k, v in g.items()}
    marking = torch.zeros(2, 3, *img0.shape[-2:], requires_grad=True)
    w = torch.linspace(1, -1, img0.shape[-1])  # the left of the image steers left (positive)

    def victim(images):  # steers towards the brighter side of the lower image
        lower = images[..., images.shape[-2] // 2:, :].mean((1, 2))
        return (lower * w).sum(-1) / w.abs().sum()

    goal = Depart("left", RolloutConfig(steps=6, dt_s=0.1, speed_mps=(10.0, 12.0)))
    batch = EOTBatch((img0.expand(2, -1, -1, -1) + marking).clamp(0, 1), torch.zeros(2, 4), torch.zeros(2, 4, 2),
                     ground)
    loss = goal.loss(victim, batch)
    assert loss.shape == (2,)
    loss.sum().backward()
    assert marking.grad is not None and float(marking.grad.abs().sum()) > 0
    # brightening the left of the road lowers the loss: the car is steered left, towards the goal
    left = torch.zeros_like(marking)
    left[..., : img0.shape[-1] // 2] = 0.3
    brighter = EOTBatch((img0.expand(2, -1, -1, -1) + left).clamp(0, 1), batch.boxes, batch.corners, ground)
    assert float(goal.loss(victim, brighter).mean()) < float(loss.detach().mean())
    # a drive that leaves the lane keeps pulling until it is past_edge_m beyond the departure limit
    hard_left = lambda images: torch.ones(images.shape[0])  # noqa: E731  full steer left
    near = Depart("left", RolloutConfig(steps=20, dt_s=0.1, speed_mps=(12.0, 12.0), past_edge_m=0.0))
    far = Depart("left", RolloutConfig(steps=20, dt_s=0.1, speed_mps=(12.0, 12.0), past_edge_m=1.0))
    assert float(near.loss(hard_left, batch).mean()) < float(far.loss(hard_left, batch).mean())


def test_a_bank_without_the_road_plane_is_refused_by_the_depart_goal():
    from patchsim.attack.goals import Depart
    from patchsim.eot.pipeline import EOTBatch
    from patchsim.errors import ConfigError

    with pytest.raises(ConfigError, match="road slot"):
        Depart().loss(lambda x: x.mean((1, 2, 3)), EOTBatch(torch.zeros(1, 3, 8, 8), torch.zeros(1, 4),
                                                           torch.zeros(1, 4, 2)))


def test_rollout_speeds_are_a_range():
    with pytest.raises(FieldError, match="speed_mps"):
        RolloutConfig(speed_mps=(15.0, 10.0))
    assert np.allclose(RolloutConfig(speed_mps=(10.0, 14.0)).speeds(4).numpy(), [10.5, 11.5, 12.5, 13.5])

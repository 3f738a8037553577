"""The built-in simulator: ground truth against rendered pixels, determinism, patch slots, errors."""

import copy

import cv2
import numpy as np
import pytest

from patchsim.errors import ConfigError, ShapeError
from patchsim.sim.base import Control


def _place(sim, sc, distance_m: float):
    sim.reset(sc)
    sign = sim.layout.signs[0]
    return sim.set_ego_pose(sign.spec.s_m - distance_m - sc.camera.forward_m, 0.0, 0.0, 0.0)


def _poly_mask(poly: np.ndarray, h: int, w: int, ss: int = 8) -> np.ndarray:
    big = np.zeros((h * ss, w * ss), np.uint8)
    cv2.fillPoly(big, [np.round(poly * ss).astype(np.int32)], 1)
    return cv2.resize(big.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA) > 0.5


@pytest.mark.parametrize("distance_m,yaw_deg", [(12.0, 0.0), (20.0, 25.0), (30.0, -30.0), (45.0, 10.0)])
def test_sign_box_and_face_match_label_render(sim, stop_scenario, distance_m, yaw_deg):
    sc = copy.deepcopy(stop_scenario)
    sc.signs[0].yaw_deg = yaw_deg
    frame = _place(sim, sc, distance_m)
    truth = frame.sign("stop_1")
    assert truth.in_view and abs(truth.distance_m - distance_m) < 5.0
    rendered = frame.labels == sim._scene.labels.ids["sign:stop_1"]
    projected = _poly_mask(truth.face_polygon_px, *rendered.shape)
    iou = (rendered & projected).sum() / (rendered | projected).sum()
    assert iou > (0.9 if rendered.sum() > 400 else 0.75), iou
    ys, xs = np.nonzero(rendered)
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    assert np.abs(box - truth.box_xyxy).max() <= 1.5
    assert truth.visible_fraction > 0.9


def test_face_corners_match_a_second_render_with_a_marker_patch(sim, stop_scenario):
    """Paint the patch slot's top-left quarter green; the green pixels must sit where the corners say."""
    sc = copy.deepcopy(stop_scenario)
    sc.randomize = {}
    sc.lighting.shadows = False
    frame = _place(sim, sc, 14.0)
    patch = np.zeros((64, 64, 4), np.float32)
    patch[:32, :32] = [0, 1, 0, 1]
    sim.set_patch("stop_face", patch)
    marked = sim.observe(labels=False).image.astype(int)
    sim.set_patch("stop_face", None)
    face = frame.labels == sim._scene.labels.ids["sign:stop_1"]
    green = (marked[..., 1] > 90) & (marked[..., 0] < 60) & (marked[..., 2] < 60) & face  # grass is green too
    c = frame.sign("stop_1").face_corners_px
    centre = c.mean(0)
    quarter = np.array([c[0], (c[0] + c[1]) / 2, centre, (c[0] + c[3]) / 2])  # top-left quarter of the face
    expected = _poly_mask(quarter, *green.shape) & face
    iou = (green & expected).sum() / (green | expected).sum()
    assert iou > 0.8, iou


def test_same_seed_gives_identical_frames(stop_scenario):
    from patchsim.sim.embedded import EmbeddedSimulator

    runs = []
    for _ in range(2):
        with EmbeddedSimulator() as sim:
            frame = sim.reset(stop_scenario, seed=5)
            images = [frame.image]
            for _ in range(3):
                frame = sim.step(Control(steer=0.05, throttle=0.4))
                images.append(frame.image)
            runs.append(np.stack(images))
    assert np.array_equal(runs[0], runs[1])
    with EmbeddedSimulator() as sim:
        other = sim.reset(stop_scenario, seed=6).image
    assert not np.array_equal(runs[0][0], other)


def test_patch_slot_errors(sim, stop_scenario):
    sim.reset(stop_scenario)
    with pytest.raises(ShapeError, match="slot 'stop_face'.*aspect"):
        sim.set_patch("stop_face", np.zeros((40, 80, 3), np.uint8))
    with pytest.raises(ShapeError, match="slot 'stop_face'.*expected an \\(H, W, 3\\)"):
        sim.set_patch("stop_face", np.zeros((40, 40), np.uint8))
    with pytest.raises(ShapeError, match="in \\[0, 1\\]"):
        sim.set_patch("stop_face", np.full((40, 40, 3), 2.0))
    with pytest.raises(ConfigError, match="no patch slot 'nope'.*stop_face"):
        sim.set_patch("nope", np.zeros((40, 40, 3), np.uint8))


def test_road_patch_appears_on_its_quad(sim):
    from patchsim.sim.scenario import load_scenario

    sc = load_scenario("scenarios/lane_keep_straight.yaml")
    sc.randomize = {}
    sim.reset(sc)
    frame = sim.set_ego_pose(60.0 - 12.0 - sc.camera.forward_m)
    slot = frame.slots["road_patch"]
    assert slot.in_view
    patch = np.zeros((72, 70, 4), np.float32)  # 3.5 m wide x 3.6 m long
    patch[..., 0] = 1.0
    patch[..., 3] = 1.0
    sim.set_patch("road_patch", patch)
    red = sim.observe(labels=False).image.astype(int)
    sim.set_patch("road_patch", None)
    is_red = (red[..., 0] > 120) & (red[..., 1] < 60)
    expected = _poly_mask(slot.corners_px, *is_red.shape)
    iou = (is_red & expected).sum() / (is_red | expected).sum()
    assert iou > 0.85, iou


def test_fog_greys_out_distance(sim, stop_scenario):
    sc = copy.deepcopy(stop_scenario)
    sc.randomize = {}
    clear = _place(sim, sc, 40.0).image.astype(float)
    sc.lighting.fog_visibility_m = 60.0
    foggy = _place(sim, sc, 40.0).image.astype(float)
    horizon = slice(150, 200)
    assert foggy[horizon].std() < 0.6 * clear[horizon].std()  # contrast at the horizon is washed out
    assert np.abs(foggy[-20:] - clear[-20:]).mean() < np.abs(foggy[horizon] - clear[horizon]).mean()


def test_ego_follows_bicycle_model(sim, stop_scenario):
    sc = copy.deepcopy(stop_scenario)
    sc.randomize = {}
    f0 = sim.reset(sc)
    f = f0
    for _ in range(20):
        f = sim.step(Control(steer=0.2, throttle=0.0))
    assert f.ego.yaw_rad > f0.ego.yaw_rad + 0.05  # positive steer turns left
    assert f.time_s == pytest.approx(20 * sc.dt_s)
    assert f.ego.speed_mps < f0.ego.speed_mps  # drag

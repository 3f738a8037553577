import math

import numpy as np

from patchsim.sim.road import Road
from patchsim.sim.scenario import RoadSpec, SegmentSpec


def test_straight_then_arc_geometry():
    road = Road(RoadSpec(segments=[SegmentSpec("straight", 50), SegmentSpec("arc", 100, 150.0, "left")]))
    assert abs(road.length_m - 150) < 1e-6
    x, y, h = road.pose(50.0)
    assert abs(x - 50) < 1e-6 and abs(y) < 1e-6 and abs(h) < 1e-9
    _, _, h_end = road.pose(150.0)
    assert abs(h_end - 100 / 150) < 1e-3  # heading turns by length / radius
    assert abs(road.curvature_at(100) - 1 / 150) < 1e-9


def test_project_inverts_point():
    road = Road(RoadSpec(segments=[SegmentSpec("straight", 20), SegmentSpec("arc", 80, 60.0, "right")]))
    for s, d in [(5.0, 1.2), (40.0, -2.0), (90.0, 0.5)]:
        x, y = road.point(s, d)
        s2, d2 = road.project(float(x), float(y))
        assert abs(s2 - s) < 0.05 and abs(d2 - d) < 0.01


def test_lane_centres_and_markings():
    spec = RoadSpec(lanes=3, lane_width_m=3.5)
    road = Road(spec)
    assert [road.lane_centre_m(i) for i in range(3)] == [3.5, 0.0, -3.5]
    kinds = [m.kind for m in road.markings((40.0, 5.25, -5.25))]
    assert kinds.count("edge") == 2 and "stop" in kinds and kinds.count("lane") > 10
    dash = next(m for m in road.markings() if m.kind == "lane")
    assert math.isclose(dash.s_end_m - dash.s_start_m, spec.dash_length_m)
    assert np.isfinite(road.strip_polygon(0, 10, 0, 0.15)).all()

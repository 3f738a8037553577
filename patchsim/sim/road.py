"""Road geometry: centre line from straight and arc segments, lanes, markings.

The centre line starts at the world origin heading along +x. It is sampled every
``SAMPLE_M`` metres; positions between samples are interpolated. ``s`` is the distance along
the centre line, ``d`` (lateral) the signed offset from it, positive to the left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from patchsim.sim.scenario import RoadSpec

SAMPLE_M = 0.25


@dataclass
class MarkingStrip:
    """A painted strip on the road: from ``s_start_m`` to ``s_end_m`` at lateral ``d_m``."""

    kind: str  # "edge", "lane", "stop"
    d_m: float
    width_m: float
    s_start_m: float
    s_end_m: float


class Road:
    """Sampled centre line with lane helpers.

    >>> from patchsim.sim.scenario import RoadSpec, SegmentSpec
    >>> road = Road(RoadSpec(segments=[SegmentSpec(kind="straight", length_m=50)]))
    >>> round(road.length_m, 2)
    50.0
    """

    def __init__(self, spec: RoadSpec):
        self.spec = spec
        xs, ys, hs, ks, ss = [0.0], [0.0], [0.0], [], [0.0]
        for seg in spec.segments:
            n = max(1, int(math.ceil(seg.length_m / SAMPLE_M)))
            ds = seg.length_m / n
            k = 0.0 if seg.kind == "straight" else (1.0 if seg.turn == "left" else -1.0) / seg.radius_m
            for _ in range(n):
                x, y, h = xs[-1], ys[-1], hs[-1]
                if k == 0.0:
                    xs.append(x + ds * math.cos(h))
                    ys.append(y + ds * math.sin(h))
                else:  # exact arc step
                    dh = k * ds
                    xs.append(x + (math.sin(h + dh) - math.sin(h)) / k)
                    ys.append(y - (math.cos(h + dh) - math.cos(h)) / k)
                    h = h + dh
                hs.append(h)
                ks.append(k)
                ss.append(ss[-1] + ds)  # arc length, exact on straights and arcs
        ks.append(ks[-1] if ks else 0.0)
        self.x = np.array(xs)
        self.y = np.array(ys)
        self.heading = np.array(hs)
        self.curvature = np.array(ks)
        self.s = np.array(ss)

    @property
    def length_m(self) -> float:
        return float(self.s[-1])

    # ------------------------------------------------------------------ poses

    def pose(self, s_m: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre-line (x, y, heading) at ``s_m`` (clamped to the road)."""
        s = np.clip(np.asarray(s_m, dtype=float), 0.0, self.length_m)
        x = np.interp(s, self.s, self.x)
        y = np.interp(s, self.s, self.y)
        h = np.interp(s, self.s, np.unwrap(self.heading))
        return x, y, h

    def curvature_at(self, s_m: float) -> float:
        return float(np.interp(s_m, self.s, self.curvature))

    def point(self, s_m: np.ndarray | float, d_m: np.ndarray | float) -> np.ndarray:
        """World (x, y) of road coordinates (s, d). Shape (..., 2)."""
        x, y, h = self.pose(s_m)
        d = np.asarray(d_m, dtype=float)
        return np.stack([x - d * np.sin(h), y + d * np.cos(h)], axis=-1)

    def project(self, x_m: float, y_m: float) -> tuple[float, float]:
        """Road coordinates (s, d) of a world point: nearest centre-line position and signed offset."""
        dx = self.x - x_m
        dy = self.y - y_m
        i = int(np.argmin(dx * dx + dy * dy))
        h = self.heading[i]
        tx, ty = math.cos(h), math.sin(h)
        px, py = x_m - self.x[i], y_m - self.y[i]
        along = px * tx + py * ty
        s = float(np.clip(self.s[i] + along, 0.0, self.length_m))
        cx, cy, ch = (float(v) for v in self.pose(s))
        d = -(x_m - cx) * math.sin(ch) + (y_m - cy) * math.cos(ch)
        return s, float(d)

    # ------------------------------------------------------------------ lanes and markings

    def lane_centre_m(self, lane: int) -> float:
        return self.spec.lane_centre_m(lane)

    def edges_m(self) -> tuple[float, float]:
        """Lateral positions of the left and right carriageway edges."""
        half = self.spec.width_m / 2
        return half, -half

    def markings(self, stop_line: tuple[float, float, float] | None = None) -> list[MarkingStrip]:
        """Painted strips. ``stop_line`` = (s_m, d_left_m, d_right_m) adds a stop line across those lanes."""
        spec = self.spec
        out: list[MarkingStrip] = []
        w = spec.marking_width_m
        left, right = self.edges_m()
        if spec.edge_lines:
            out.append(MarkingStrip("edge", left - w / 2, w, 0.0, self.length_m))
            out.append(MarkingStrip("edge", right + w / 2, w, 0.0, self.length_m))
        if spec.lane_line != "none":
            for k in range(1, spec.lanes):
                d = left - k * spec.lane_width_m
                if spec.lane_line == "solid":
                    out.append(MarkingStrip("lane", d, w, 0.0, self.length_m))
                else:
                    s = 0.0
                    period = spec.dash_length_m + spec.dash_gap_m
                    while s < self.length_m:
                        out.append(MarkingStrip("lane", d, w, s, min(s + spec.dash_length_m, self.length_m)))
                        s += period
        if stop_line is not None:
            s, d_left, d_right = stop_line
            sw = spec.stop_line_width_m
            out.append(MarkingStrip("stop", (d_left + d_right) / 2, abs(d_left - d_right), s - sw, s))
        return out

    def strip_polygon(self, s_start_m: float, s_end_m: float, d_m: float, width_m: float,
                      step_m: float = 2.0) -> np.ndarray:
        """Vertices of a strip that follows the road: (2N, 2), left then right edge, along s."""
        n = max(2, int(math.ceil((s_end_m - s_start_m) / step_m)) + 1)
        s = np.linspace(s_start_m, s_end_m, n)
        left = self.point(s, d_m + width_m / 2)
        right = self.point(s, d_m - width_m / 2)
        return np.concatenate([left, right], axis=0)

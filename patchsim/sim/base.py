"""The simulator protocol every backend implements, and the Frame it returns.

Scenario code never branches on the backend: it calls ``reset``, ``step``, ``set_patch`` and
``close`` (or uses the simulator as a context manager) and reads :class:`Frame` objects.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchsim.errors import ConfigError, PatchsimError, ShapeError
from patchsim.sim.camera import CameraModel
from patchsim.sim.layout import Layout
from patchsim.sim.road import Road
from patchsim.sim.scenario import Scenario


@dataclass
class Control:
    """Driver command for one step.

    Attributes:
        steer: front wheel angle as a fraction of the maximum, in [-1, 1], positive turns left.
        throttle: in [0, 1].
        brake: in [0, 1].
    """

    steer: float = 0.0
    throttle: float = 0.0
    brake: float = 0.0

    def clipped(self) -> "Control":
        for name in ("steer", "throttle", "brake"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"control.{name} is not a finite number: {getattr(self, name)}")
        return Control(
            float(np.clip(self.steer, -1, 1)), float(np.clip(self.throttle, 0, 1)), float(np.clip(self.brake, 0, 1))
        )


@dataclass
class EgoTruth:
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    steer: float
    s_m: float  # rear-axle position along the road centre line


@dataclass
class SignTruth:
    """Ground truth of one sign in one frame.

    Attributes:
        face_corners_px: (4, 2) image corners of the face's bounding rectangle, in the order
            top-left, top-right, bottom-right, bottom-left as seen from the front. A patch image
            maps onto this quad. NaN where a corner is behind the camera.
        face_polygon_px: (K, 2) the projected outline of the real shape (octagon, triangle, ...).
        box_xyxy: the 2D box of the face outline clipped to the image, or None when out of view.
        visible_fraction: share of the face outline's in-image area not hidden by other objects
            (from the label render), or None when the label render was not made.
    """

    id: str
    kind: str
    speed_limit_mph: int | None
    face_corners_px: np.ndarray
    face_polygon_px: np.ndarray | None
    box_xyxy: np.ndarray | None
    distance_m: float
    visible_fraction: float | None = None

    @property
    def in_view(self) -> bool:
        return self.box_xyxy is not None


@dataclass
class SlotTruth:
    """Image corners (4, 2) of a patch slot: top-left, top-right, bottom-right, bottom-left."""

    name: str
    kind: str
    corners_px: np.ndarray
    size_m: tuple[float, float]  # (width, height) of the slot's patch image
    distance_m: float
    in_view: bool


@dataclass
class ObjectTruth:
    id: str
    kind: str  # "vehicle"
    box_xyxy: np.ndarray | None
    distance_m: float
    visible_fraction: float | None = None


@dataclass
class LaneTruth:
    """The ego lane around the vehicle.

    Attributes:
        lateral_offset_m: ego (rear axle) offset from the lane centre, positive to the left.
        heading_error_rad: ego heading minus road heading, positive to the left.
        centre_ego_m, left_ego_m, right_ego_m: (N, 2) lane centre and boundaries ahead, in the
            ego frame (x forward, y left), at 0, 2, ..., 48 m along the road.
        centre_px, left_px, right_px: the same polylines projected into the image (NaN behind).
    """

    lane: int
    width_m: float
    lateral_offset_m: float
    heading_error_rad: float
    curvature_1pm: float
    centre_ego_m: np.ndarray
    left_ego_m: np.ndarray
    right_ego_m: np.ndarray
    centre_px: np.ndarray
    left_px: np.ndarray
    right_px: np.ndarray

    @property
    def departed(self) -> bool:
        """True when the rear-axle centre has left the lane."""
        return abs(self.lateral_offset_m) > self.width_m / 2


@dataclass
class Frame:
    """One camera frame with all ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) int32 label ids from the label render, or None (see ``label_names``).
    """

    index: int
    time_s: float
    image: np.ndarray
    camera: CameraModel
    ego: EgoTruth
    signs: list[SignTruth]
    slots: dict[str, SlotTruth]
    objects: list[ObjectTruth]
    lane: LaneTruth
    stop_line_distance_m: float | None  # from the front bumper to the stop line; negative once past
    labels: np.ndarray | None = None
    label_names: dict[int, str] = field(default_factory=dict)

    def sign(self, sign_id: str) -> SignTruth:
        for s in self.signs:
            if s.id == sign_id:
                return s
        raise KeyError(sign_id)

    def ground_truth(self) -> dict[str, Any]:
        """JSON-ready ground truth (everything but the pixels)."""

        def arr(a: np.ndarray | None) -> Any:
            if a is None:
                return None
            return [[None if not np.isfinite(v) else round(float(v), 3) for v in row] for row in np.atleast_2d(a)]

        def box(b: np.ndarray | None) -> Any:
            return None if b is None else [round(float(v), 2) for v in b]

        return {
            "index": self.index,
            "time_s": round(self.time_s, 4),
            "ego": {k: round(float(v), 4) for k, v in vars(self.ego).items()},
            "camera": self.camera.to_json(),
            "signs": [
                {
                    "id": s.id, "kind": s.kind, "speed_limit_mph": s.speed_limit_mph,
                    "box_xyxy": box(s.box_xyxy), "face_corners_px": arr(s.face_corners_px),
                    "distance_m": round(s.distance_m, 3), "visible_fraction": s.visible_fraction,
                }
                for s in self.signs
            ],
            "slots": {
                n: {"kind": t.kind, "corners_px": arr(t.corners_px), "size_m": list(t.size_m),
                    "distance_m": round(t.distance_m, 3), "in_view": t.in_view}
                for n, t in self.slots.items()
            },
            "objects": [
                {"id": o.id, "kind": o.kind, "box_xyxy": box(o.box_xyxy), "distance_m": round(o.distance_m, 3),
                 "visible_fraction": o.visible_fraction}
                for o in self.objects
            ],
            "lane": {
                "lane": self.lane.lane, "width_m": self.lane.width_m,
                "lateral_offset_m": round(self.lane.lateral_offset_m, 4),
                "heading_error_rad": round(self.lane.heading_error_rad, 5),
                "curvature_1pm": round(self.lane.curvature_1pm, 6),
                "centre_ego_m": arr(self.lane.centre_ego_m),
                "left_px": arr(self.lane.left_px), "right_px": arr(self.lane.right_px),
            },
            "stop_line_distance_m": None if self.stop_line_distance_m is None else round(self.stop_line_distance_m, 3),
        }


def check_patch_image(slot: str, image: np.ndarray, size_m: tuple[float, float]) -> np.ndarray:
    """Validate a patch image for a slot and return it as float32 RGBA in [0, 1].

    Args:
        image: (H, W, 3) or (H, W, 4), uint8 or float in [0, 1]; a 4th channel is the mask.
        size_m: (width, height) of the slot; the image aspect W/H must match within 2 %.

    Raises:
        ShapeError: naming the slot and what is wrong.
    """
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ShapeError(f"patch for slot {slot!r}: expected an (H, W, 3) or (H, W, 4) image, got shape {arr.shape}")
    h, w = arr.shape[:2]
    if h < 2 or w < 2:
        raise ShapeError(f"patch for slot {slot!r}: image of {w}x{h} px is too small")
    want = size_m[0] / size_m[1]
    if abs((w / h) / want - 1) > 0.02:
        raise ShapeError(
            f"patch for slot {slot!r}: image is {w}x{h} px (aspect {w / h:.3f}) but the slot is "
            f"{size_m[0]:.3f} x {size_m[1]:.3f} m (aspect {want:.3f})"
        )
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / 255.0
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ShapeError(f"patch for slot {slot!r}: float image values must be finite and in [0, 1]")
        out = arr.astype(np.float32)
    else:
        raise ShapeError(f"patch for slot {slot!r}: dtype {arr.dtype} is neither uint8 nor float")
    if out.shape[2] == 3:
        out = np.concatenate([out, np.ones_like(out[..., :1])], axis=2)
    return out


def composite_over(base: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """A patch (float RGBA in [0, 1], any size) laid over a base texture (float RGBA (H, W, 4)).

    The patch is resized to the base; its alpha blends its colours over the base's; the base's
    alpha (a sign's outline) is kept.
    """
    import cv2

    tex = cv2.resize(patch, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_AREA)
    a = tex[..., 3:4]
    out = base.astype(np.float32).copy()
    out[..., :3] = base[..., :3] * (1 - a) + tex[..., :3] * a
    return out


def slot_or_error(slots: dict, slot: str, scenario_name: str):
    """``slots[slot]``, or a ConfigError that lists the scenario's slots."""
    if slot not in slots:
        raise ConfigError(f"no patch slot {slot!r} in scenario {scenario_name!r} (slots: {', '.join(slots) or 'none'})")
    return slots[slot]


class Simulator(abc.ABC):
    """One driving simulator backend: reset to a scenario, step with a control, patch slots.

    Fixed time step, synchronous and seeded. Use as a context manager so resources (a server's
    synchronous mode, spawned actors, render buffers) are always released::

        with make_simulator("embedded") as sim:
            frame = sim.reset(scenario, seed=0)
            while ...:
                frame = sim.step(Control(steer=0.1, throttle=0.3))
    """

    @abc.abstractmethod
    def reset(self, scenario: Scenario, seed: int | None = None) -> Frame:
        """Load ``scenario`` (randomized by ``seed`` when given) and return the first frame."""

    @abc.abstractmethod
    def step(self, control: Control) -> Frame:
        """Advance one fixed time step ``scenario.dt_s`` and return the new frame."""

    @abc.abstractmethod
    def set_patch(self, slot: str, image: np.ndarray | None) -> None:
        """Show ``image`` (see :func:`check_patch_image`) on patch slot ``slot``; None restores it."""

    @abc.abstractmethod
    def set_ego_pose(self, s_m: float, lateral_offset_m: float = 0.0, heading_offset_rad: float = 0.0,
                     speed_mps: float | None = None) -> Frame:
        """Place the ego at a road position (relative to its lane centre) and return that frame."""

    @abc.abstractmethod
    def observe(self, labels: bool | None = None) -> Frame:
        """The frame of the current state, rendered again (after ``set_patch``, say).

        Args:
            labels: True asks for ``Frame.labels`` (the label render) on this frame, False for
                none, None follows the simulator's setting. A backend without a label render
                raises :class:`~patchsim.errors.PatchsimError` for True.

        On a backend that renders only by advancing its world (CARLA), one time step passes.
        """

    def label_id(self, name: str) -> int:
        """Id of an object in the label render: ``"sign:<id>"``, ``"slot:<name>"``, ``"vehicle:<id>"``.

        Raises:
            PatchsimError: this backend has no label render, or no such object.
        """
        raise PatchsimError(f"the {self.backend} simulator has no label render (needed for {name!r})")

    @property
    @abc.abstractmethod
    def road(self) -> "Road":
        """Road geometry of the current scenario (centre line, lanes), for drivers and metrics."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every resource; safe to call twice."""

    scenario: Scenario | None = None  # the resolved (randomized) scenario of the last reset
    layout: "Layout | None" = None  # world placement of the last reset's objects (signs, slots, vehicles)
    backend: str = "simulator"  # "embedded" or "carla", for results and messages
    observes_without_time: bool = True  # False where observe() advances the world one step

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Recorders: what an episode leaves on disk besides its records (videos, frames, ground truth)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from patchsim.runs import atomic_path, write_image
from patchsim.sim.base import Control, Frame


class VideoWriter:
    """MP4 (H.264) writer using the ffmpeg binary shipped with imageio-ffmpeg; atomic on close."""

    def __init__(self, path: Path, fps: float):
        import imageio.v2 as imageio

        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        tmp = self._ctx.__enter__()
        self._writer = imageio.get_writer(str(tmp), format="FFMPEG", fps=fps, codec="libx264", quality=7,
                                          macro_block_size=16, ffmpeg_log_level="error")

    def append(self, image: np.ndarray) -> None:
        self._writer.append_data(image)

    def close(self, ok: bool = True) -> None:
        self._writer.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)


def annotate(image: np.ndarray, record: dict[str, Any]) -> np.ndarray:
    """A copy of ``image`` with the record's detections, planner state, speed and lane offset drawn on it."""
    import cv2

    img = image.copy()
    for det in record.get("detections", []):
        name, score, x1, y1, x2, y2 = det
        colour = (255, 60, 60) if name == "stop_sign" else (255, 255, 0)
        cv2.rectangle(img, (int(x1), int(y1)), (int(x2), int(y2)), colour, 1)
        cv2.putText(img, f"{name} {score:.2f}", (int(x1), max(8, int(y1) - 2)), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    colour, 1, cv2.LINE_AA)
    lines = [f"t {record['t_s']:5.2f} s   {record['speed_mps']:4.1f} m/s   lane offset {record['lateral_offset_m']:+.2f} m"]
    if "stop_confirmed" in record:
        state = "STOP CONFIRMED" if record["stop_confirmed"] else "no stop sign"
        if record.get("speed_limit_confirmed"):
            state += "   SPEED LIMIT"
        lines.append(f"planner: {state}   stop score {record['stop_score']:.2f}")
    if record.get("sign_distance_m") is not None:
        lines.append(f"sign {record['sign_distance_m']:.1f} m")
    if "victim_steer" in record:
        lines.append(f"victim steer {record['victim_steer']:+.3f}")
    for k, text in enumerate(lines):
        y = 16 + 14 * k
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, (8, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class VideoRecorder:
    """``path`` (MP4) of the episode, annotated with :func:`annotate` unless ``annotated`` is False."""

    def __init__(self, path: str | Path, fps: float, annotated: bool = True):
        self.writer = VideoWriter(Path(path), fps)
        self.annotated = annotated

    def on_frame(self, frame: Frame, control: Control, record: dict[str, Any]) -> None:
        self.writer.append(annotate(frame.image, record) if self.annotated else frame.image)

    def close(self, ok: bool) -> None:
        self.writer.close(ok)


class FramesRecorder:
    """Every frame as ``DIR/NNNNNN.png``."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def on_frame(self, frame: Frame, control: Control, record: dict[str, Any]) -> None:
        write_image(self.dir / f"{frame.index:06d}.png", frame.image)

    def close(self, ok: bool) -> None:
        pass


class GroundTruthRecorder:
    """``path``: one JSON object per frame, the frame's full ground truth (:meth:`Frame.ground_truth`)."""

    def __init__(self, path: str | Path):
        self._ctx = atomic_path(Path(path))
        self._fh = open(self._ctx.__enter__(), "w", encoding="utf-8")
        self.count = 0

    def on_frame(self, frame: Frame, control: Control, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(frame.ground_truth()) + "\n")
        self.count += 1

    def close(self, ok: bool) -> None:
        self._fh.close()
        if ok:
            self._ctx.__exit__(None, None, None)
        else:
            self._ctx.__exit__(RuntimeError, RuntimeError("aborted"), None)

"""``patchsim field``: a printed patch filmed on a real sign (a phone drive-by, as RP2 did).

The victim runs on every frame; the same confirmation rule as the planner says whether, and from
which frame on, a car would have acted on the sign. Without ground-truth distances, detections are
grouped by apparent sign size (the box height of the best detection, or of the last one seen).
Outputs: ``results.json`` (per-frame records and a summary with the simulator's metric names),
``video.mp4`` annotated, and ``detection_over_time.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from patchsim.closedloop.drivers import PlannerConfig, _Confirmer, best_of, detect, detection_rows, image_tensor
from patchsim.errors import ConfigError
from patchsim.runs import manifest, write_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
#: Apparent sign height bands (px): about 60+, 30-60, 20-30, 10-20, <10 m for a 0.75 m sign at 50 deg HFOV, 640 px.
SIZE_BANDS_PX: tuple[tuple[float, float], ...] = ((0, 8), (8, 16), (16, 32), (32, 64), (64, float("inf")))


def read_frames(source: str | Path, fps: float | None = None) -> tuple[Iterator[np.ndarray], float]:
    """Frames (H, W, 3) uint8 RGB of a video file or an image folder (sorted by name), and the frame rate."""
    import cv2

    src = Path(source)
    if src.is_dir():
        files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the folder", src)

        def images() -> Iterator[np.ndarray]:
            for p in files:
                img = cv2.imread(str(p), cv2.IMREAD_COLOR)
                if img is None:
                    raise ConfigError("not a readable image", p)
                yield img[:, :, ::-1].copy()

        return images(), float(fps or 20.0)
    if not src.is_file():
        raise ConfigError("no such video file or image folder", src)
    import imageio.v2 as imageio

    try:
        reader = imageio.get_reader(str(src), format="FFMPEG")
        rate = float(fps or reader.get_meta_data().get("fps", 20.0))
    except Exception as exc:  # imageio reports unreadable files with several exception types
        raise ConfigError(f"cannot read the video: {exc}", src) from exc

    def frames() -> Iterator[np.ndarray]:
        try:
            for img in reader:
                yield np.ascontiguousarray(img[..., :3])
        finally:
            reader.close()

    return frames(), rate


def field_test(source: str | Path, out_dir: str | Path, victim: str = "detector:default",
               sign_class: str = "stop_sign", planner: PlannerConfig | None = None,
               fps: float | None = None) -> dict[str, Any]:
    """Run the detector over a drive-by; write results, an annotated video and a plot; return the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from patchsim.closedloop.recorders import VideoWriter, annotate
    from patchsim.closedloop.report import save_figure
    from patchsim.victims.registry import load_victim

    cfg = planner or PlannerConfig()
    det = load_victim(victim)
    if not hasattr(det, "class_indices"):
        raise ConfigError(f"{victim!r} is not a detector", key="victim")
    idx = torch.tensor(det.class_indices(sign_class))
    frames, rate = read_frames(source, fps)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    confirm = _Confirmer(cfg.confirm_k, cfg.confirm_n)
    records: list[dict[str, Any]] = []
    writer = None
    ok = False
    try:
        for i, image in enumerate(frames):
            d = detect(det, image_tensor(image, det.device), cfg.record_min_score)
            score, row = best_of(d, idx)
            height = None if row is None else float(d.boxes_xyxy[row, 3] - d.boxes_xyxy[row, 1])
            confirm.update(score >= cfg.min_score)
            rec = {"i": i, "t_s": round(i / rate, 4), "stop_score": round(score, 4), "sign_height_px": height,
                   "stop_confirmed": confirm.confirmed, "speed_mps": 0.0, "lateral_offset_m": 0.0,
                   "detections": detection_rows(d, det.names)}
            records.append(rec)
            if writer is None:
                writer = VideoWriter(out / "video.mp4", rate)
            writer.append(annotate(image, rec))
        ok = True
    finally:
        if writer is not None:
            writer.close(ok)
    if not records:
        raise ConfigError("no frames", source)
    summary = _summary(records, cfg.min_score)
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot([r["t_s"] for r in records], [r["stop_score"] for r in records], lw=1)
    ax.axhline(cfg.min_score, color="k", ls="--", lw=0.8)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{sign_class} score")
    ax.set_ylim(-0.02, 1.02)
    save_figure(fig, out / "detection_over_time.png")
    doc = {"source": str(source), "victim": victim, "sign_class": sign_class, "fps": rate,
           "planner": {"confirm_k": cfg.confirm_k, "confirm_n": cfg.confirm_n, "min_score": cfg.min_score},
           "summary": summary, "frames": records}
    write_json(out / "results.json", doc)
    write_json(out / "run.json", manifest("field", None, {"source": str(source), "victim": victim}))
    return {**summary, "frames": len(records)}


def _summary(records: list[dict[str, Any]], min_score: float) -> dict[str, Any]:
    hits = [r["stop_score"] >= min_score for r in records]
    first = next((r for r, h in zip(records, hits) if h), None)
    conf = next((r for r in records if r["stop_confirmed"]), None)
    # a frame's apparent size: its own detection, else the last detected size (the sign is still there)
    sizes, last = [], None
    for r in records:
        last = r["sign_height_px"] if r["sign_height_px"] is not None else last
        sizes.append(last)
    by_size = {}
    for lo, hi in SIZE_BANDS_PX:
        band = [h for h, s in zip(hits, sizes) if s is not None and lo <= s < hi]
        name = f"{lo:g}+px" if hi == float("inf") else f"{lo:g}-{hi:g}px"
        by_size[name] = round(sum(band) / len(band), 4) if band else None
    return {"detection_rate": round(sum(hits) / len(hits), 4), "stop_confirmed": conf is not None,
            "first_detection_s": None if first is None else first["t_s"],
            "stop_confirmed_s": None if conf is None else conf["t_s"],
            "detection_rate_by_size": by_size}

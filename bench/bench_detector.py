"""Detector cost: forward + backward (gradient to the input) per image at the default resolution,
the floor the EOT optimizer is measured against.

    python bench/bench_detector.py [--batch 8] [--repeats 5]

Prints one JSON object: seconds per image for 640x384 full frames and for the 256x256 windows the
attack optimizes on, forward only and forward + backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def per_image(det, h: int, w: int, batch: int, repeats: int, backward: bool) -> float:
    x = torch.rand(batch, 3, h, w)
    times = []
    for i in range(repeats + 1):
        xi = x.clone().requires_grad_(backward)
        t0 = time.perf_counter()
        raw = det(xi)
        if backward:
            raw.scores[..., 0].amax(-1).sum().backward()
        if i:  # the first run warms up
            times.append(time.perf_counter() - t0)
    return statistics.median(times) / batch


def main() -> None:
    from patchsim.victims.detector import load_detector

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--detector", default="detector:default")
    args = ap.parse_args()
    det = load_detector(args.detector)
    out = {"detector": args.detector, "threads": torch.get_num_threads(), "batch": args.batch}
    for name, (h, w) in {"frame_640x384": (384, 640), "window_256": (256, 256)}.items():
        out[f"{name}_forward_s_per_image"] = round(per_image(det, h, w, args.batch, args.repeats, False), 4)
        out[f"{name}_forward_backward_s_per_image"] = round(per_image(det, h, w, args.batch, args.repeats, True), 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

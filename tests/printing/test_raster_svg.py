"""Raster export with dpi metadata, and SVG cut outlines in mm."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PIL import Image

from patchsim.errors import ConfigError
from patchsim.printing.raster import export_raster
from patchsim.printing.svg import export_cut_svg

STICKERS = [{"x_m": 0.1, "y_m": 0.2, "w_m": 0.12, "h_m": 0.12},
            {"x_m": 0.45, "y_m": 0.25, "w_m": 0.12, "h_m": 0.12},
            {"x_m": 0.3, "y_m": 0.5, "w_m": 0.15, "h_m": 0.08}]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_raster_has_dpi_and_physical_size(make_run, tmp_path, suffix):
    run = make_run("stickers", size_m=(0.75, 0.75), dpi=50.0, mask_kind="stickers", stickers_m=STICKERS)
    out = export_raster(run, tmp_path / f"patch{suffix}")
    with Image.open(out) as img:
        dpi = img.info["dpi"]
        assert dpi[0] == pytest.approx(50.0, abs=0.02)  # PNG stores whole pixels per metre
        assert img.mode == "RGBA"  # transparent outside the stickers
        width_mm = img.size[0] / dpi[0] * 25.4
        alpha = np.asarray(img)[..., 3]
    assert width_mm == pytest.approx(750, abs=0.6)
    assert 0 < (alpha > 0).mean() < 0.2

    resampled = export_raster(run, tmp_path / "half.png", dpi=25.0, transparent=False)
    with Image.open(resampled) as img:
        assert img.mode == "RGB" and img.info["dpi"][0] == pytest.approx(25.0, abs=0.02)
        assert img.size[0] / 25.0 * 25.4 == pytest.approx(750, abs=1.1)
    with pytest.raises(ConfigError, match="unsupported raster format"):
        export_raster(run, tmp_path / "patch.jpg")


def test_svg_has_one_path_per_sticker_in_mm(make_run, tmp_path):
    run = make_run("stickers", size_m=(0.75, 0.75), dpi=20.0, mask_kind="stickers", stickers_m=STICKERS)
    out = export_cut_svg(run, tmp_path / "cut.svg")
    root = ET.parse(out).getroot()
    assert root.get("width") == "750.000mm" and root.get("viewBox") == "0 0 750.000 750.000"
    paths = root.findall(f".//{SVG}path")
    assert [p.get("id") for p in paths] == ["sticker-1", "sticker-2", "sticker-3"]
    first = [float(v) for v in paths[0].get("d").replace("M", "").replace("L", "").replace("Z", "").split()]
    xs, ys = first[0::2], first[1::2]
    assert (min(xs), min(ys), max(xs), max(ys)) == pytest.approx((100, 200, 220, 320))
    assert root.find(f".//{SVG}polygon").get("id") == "slot-outline"  # the octagon, for reference


def test_svg_full_poster_is_the_sign_outline(make_run, tmp_path):
    run = make_run("full", size_m=(0.6, 0.6), dpi=20.0)
    root = ET.parse(export_cut_svg(run, tmp_path / "cut.svg")).getroot()
    paths = root.findall(f".//{SVG}path")
    assert len(paths) == 1 and paths[0].get("d").count("L") == 7  # octagon: 8 vertices

"""Colour chart and calibration from a synthetic photo: known printer distortion, camera cast, vignetting,
perspective and noise; plus the failure cases."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from patchsim.eot.printer import default_profile, load_profile
from patchsim.printing.calibrate import CalibrationError, calibrate
from patchsim.printing.chart import chart_layout, load_chart_layout, make_chart
from patchsim.printing.colour import delta_e_srgb, linear_to_srgb, srgb_to_linear
from patchsim.printing.fit import fit_model
from tests.printing.conftest import render_pages

# the "printer": what the camera would see on the print, white-balanced on paper (paper white 0.94)
PRINTER_M = np.array([[0.80, 0.10, -0.02], [0.05, 0.78, 0.05], [0.02, 0.06, 0.80]])
PRINTER_OFFSET = np.full(3, 0.06)
CHART_DPI = 100.0


def printer(rgb: np.ndarray) -> np.ndarray:
    return np.clip(rgb @ PRINTER_M.T + PRINTER_OFFSET, 0, 1)


@pytest.fixture(scope="module")
def chart_page(tmp_path_factory) -> np.ndarray:
    """The default chart rendered to pixels, (H, W, 3) uint8."""
    out = tmp_path_factory.mktemp("chart") / "chart.pdf"
    make_chart(out)
    return render_pages(out, CHART_DPI)[0]


def synthetic_photo(page: np.ndarray, blur_px: float = 0.0, seed: int = 0) -> np.ndarray:
    """Photo (H, W, 3) uint8 RGB of the printed chart: printer model, perspective (rotated ~90 degrees),
    camera exposure and colour cast, vignetting (all in linear light), then noise and quantisation."""
    rng = np.random.default_rng(seed)
    seen = printer(page.reshape(-1, 3).astype(np.float32) / 255).reshape(page.shape).astype(np.float32)
    h, w = page.shape[:2]
    width, height = 1200, 900
    corners = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    target = np.float32([[1010, 70], [1065, 810], [160, 840], [195, 45]])
    warp = cv2.getPerspectiveTransform(corners, target)
    photo = cv2.warpPerspective(seen, warp, (width, height), flags=cv2.INTER_AREA, borderValue=(0.2, 0.2, 0.22))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    r2 = ((xx - width / 2) ** 2 + (yy - height / 2) ** 2) / ((width / 2) ** 2 + (height / 2) ** 2)
    gain = (1 - 0.35 * r2)[..., None] * np.float32([0.92, 0.85, 0.72]) * 0.9
    out = linear_to_srgb(srgb_to_linear(photo) * gain).astype(np.float32)
    out += rng.normal(0, 0.01, out.shape).astype(np.float32)
    if blur_px:
        out = cv2.GaussianBlur(out, (0, 0), blur_px)
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_photo(path, rgb: np.ndarray):
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_chart_layout_and_files(tmp_path, chart_page):
    layout = make_chart(tmp_path / "chart.pdf", patches=140)
    assert (tmp_path / "chart.pdf").is_file()
    again = load_chart_layout(tmp_path / "chart.json")
    assert again.to_json() == layout.to_json() == chart_layout().to_json()  # deterministic
    colours = np.array([p.rgb for p in layout.role("colour")])
    assert len(colours) == 140 and len(layout.role("white")) >= 9 and len(layout.role("black")) >= 9
    assert len(np.unique(colours, axis=0)) == 140
    greys = colours[np.ptp(colours, axis=1) == 0]
    assert len(greys) >= 10
    # the rendered page has the nominal colours where the layout says, and all four markers
    ppmm = CHART_DPI / 25.4
    for p in layout.patches[::7]:
        cx, cy = (p.rect.x_mm + p.rect.w_mm / 2) * ppmm, (p.rect.y_mm + p.rect.h_mm / 2) * ppmm
        assert np.abs(chart_page[int(cy), int(cx)] / 255 - p.rgb).max() < 1 / 255 + 1e-9
    from patchsim.printing.calibrate import find_markers

    found = find_markers(chart_page.astype(np.float32) / 255)
    assert sorted(found) == [0, 1, 2, 3]
    assert np.allclose(found[0][0] / ppmm, layout.marker_corners_mm(0)[0], atol=0.5)


def test_calibrate_recovers_known_printer(tmp_path, chart_page):
    photo = save_photo(tmp_path / "photo.jpg", synthetic_photo(chart_page))
    result = calibrate(photo, "synthetic", out_dir=tmp_path / "profiles")
    assert result.path == tmp_path / "profiles" / "synthetic.json"
    profile = load_profile(result.path)
    assert profile.name == "synthetic" and profile.palette.shape == (30, 3)
    assert profile.fit_mean_delta_e is not None and profile.fit_mean_delta_e < 1.0

    levels = np.linspace(0, 1, 7)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    error = delta_e_srgb(profile.apply_np(grid), printer(grid))
    assert error.mean() < 3.0, error.mean()
    assert error.mean() < 1.0  # in practice about 0.1-0.3
    assert np.allclose(profile.matrix, PRINTER_M, atol=0.03) and np.allclose(profile.offset, PRINTER_OFFSET, atol=0.02)
    saved = json.loads(result.path.read_text())
    assert saved["format"] == "patchsim-printer-profile/1" and saved["meta"]["photo"] == "photo.jpg"


def test_tone_curves_used_when_they_help():
    rng = np.random.default_rng(1)
    rgb = rng.uniform(0, 1, (150, 3))
    seen = printer(rgb) ** 1.6  # a printer that is not affine: darker mid-tones
    model, info = fit_model(rgb, seen)
    assert info["tone_used"] and info["tone_cv_delta_e"] < info["affine_cv_delta_e"]
    assert float(delta_e_srgb(model.apply(rgb), seen).mean()) < 0.5 * info["affine_delta_e"]
    affine_only, info2 = fit_model(rgb, printer(rgb))
    assert not info2["tone_used"] and info2["affine_delta_e"] < 0.05


def test_photo_without_markers(tmp_path, chart_page):
    photo = synthetic_photo(chart_page)
    blank = save_photo(tmp_path / "blank.jpg", np.full_like(photo, 128))
    with pytest.raises(CalibrationError, match=r"blank\.jpg: found none of the chart's corner markers"):
        calibrate(blank, "x", out_dir=tmp_path / "profiles")
    from patchsim.printing.calibrate import find_markers

    corners = find_markers(photo.astype(np.float32) / 255)
    for marker_id in (0, 2):  # cover two markers with a hand
        x0, y0 = corners[marker_id].min(0).astype(int) - 8
        x1, y1 = corners[marker_id].max(0).astype(int) + 8
        photo[y0:y1, x0:x1] = (170, 120, 100)
    covered = save_photo(tmp_path / "covered.jpg", photo)
    with pytest.raises(CalibrationError, match=r"found chart marker\(s\) \[1, 3\] but not \[0, 2\]"):
        calibrate(covered, "x", out_dir=tmp_path / "profiles")
    assert not (tmp_path / "profiles").exists()


def test_blurred_photo(tmp_path, chart_page):
    photo = save_photo(tmp_path / "blurred.jpg", synthetic_photo(chart_page, blur_px=2.0))
    with pytest.raises(CalibrationError, match=r"blurred\.jpg: the chart is blurred \(sharpness"):
        calibrate(photo, "x", out_dir=tmp_path / "profiles")
    assert not (tmp_path / "profiles" / "x.json").exists()


def test_unreadable_photo_and_bad_name(tmp_path):
    bad = tmp_path / "photo.jpg"
    bad.write_text("not an image")
    with pytest.raises(CalibrationError, match=r"photo\.jpg: not a readable image"):
        calibrate(bad, "x", out_dir=tmp_path)
    with pytest.raises(CalibrationError, match=r"missing\.jpg: photo not found"):
        calibrate(tmp_path / "missing.jpg", "x", out_dir=tmp_path)
    with pytest.raises(CalibrationError, match="profile name"):
        calibrate(bad, "../escape", out_dir=tmp_path)
    with pytest.raises(CalibrationError, match="'default' is kept"):
        calibrate(bad, "default", out_dir=tmp_path)


def test_default_profile_ships():
    shipped = load_profile("default")  # printables/profiles/default.json, from the repository root
    reference = default_profile()
    assert np.allclose(shipped.matrix, reference.matrix) and np.allclose(shipped.offset, reference.offset)
    assert np.allclose(shipped.palette, reference.palette)


def test_calibrate_command_succeeds_on_a_good_photo(tmp_path, chart_page):
    from typer.testing import CliRunner

    from patchsim.cli import app

    photo = save_photo(tmp_path / "photo.jpg", synthetic_photo(chart_page))
    r = CliRunner().invoke(app, ["calibrate", str(photo), "--name", "cli", "--profiles-dir", str(tmp_path / "p")])
    assert r.exit_code == 0, r.output
    assert "mean Delta E (CIEDE2000)" in r.output and (tmp_path / "p" / "cli.json").is_file()

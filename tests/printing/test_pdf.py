"""Print export: true size on the page, tiling and reassembly, stickers and guide, errors leave no file."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from patchsim.errors import ConfigError, ShapeError
from patchsim.printing.canvas import MM_TO_PT
from patchsim.printing.layout import TilingError
from patchsim.printing.pdf import export_pdf
from patchsim.sim.textures import face_outline
from tests.printing.conftest import page_texts, patch_image, render_pages

RENDER_DPI = 300.0


def _blue_dots(w_px: int, h_px: int, centres: list[tuple[int, int]]) -> np.ndarray:
    img = patch_image(w_px, h_px)
    img[..., 2] = np.minimum(img[..., 2], 200)  # no pure blue anywhere else
    for cx, cy in centres:
        img[cy - 5:cy + 5, cx - 5:cx + 5] = (0, 0, 255)
    return img


def _dot_centroids_px(page: np.ndarray) -> np.ndarray:
    """Centroids (x, y) of pure-blue blobs in a rendered page, sorted by (y, x)."""
    blue = ((page[..., 2] > 235) & (page[..., 0] < 25) & (page[..., 1] < 25)).astype(np.uint8)
    n, _, _, cents = cv2.connectedComponentsWithStats(blue)
    return np.array(sorted(cents[1:].tolist(), key=lambda c: (round(c[1] / 20), c[0])))


def placement_error_mm(page: np.ndarray, placed, dpi: float, original: np.ndarray,
                       inset_mm: float = 3.0) -> tuple[float, float, float]:
    """How far a placed image lies from where the layout says, measured on a rendered page.

    The expected rendering is patch.png resampled (nearest) onto the page's pixel grid from the layout;
    phase correlation gives the residual shift. Returns (dx_mm, dy_mm, mean abs grey difference).
    """
    ppmm = dpi / 25.4
    x0, y0, x1, y1 = placed.box_px
    rect = placed.page_rect
    sx, sy = (x1 - x0) / rect.w_mm, (y1 - y0) / rect.h_mm
    u0, v0 = math.ceil((rect.x_mm + inset_mm) * ppmm), math.ceil((rect.y_mm + inset_mm) * ppmm)
    u1, v1 = math.floor((rect.x1_mm - inset_mm) * ppmm), math.floor((rect.y1_mm - inset_mm) * ppmm)
    printed = cv2.cvtColor(page[v0:v1, u0:u1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    grey = cv2.cvtColor(original, cv2.COLOR_RGB2GRAY).astype(np.float32)
    m = np.array([[sx / ppmm, 0, x0 + ((u0 + 0.5) / ppmm - rect.x_mm) * sx - 0.5],
                  [0, sy / ppmm, y0 + ((v0 + 0.5) / ppmm - rect.y_mm) * sy - 0.5]])
    expected = cv2.warpAffine(grey, m, (u1 - u0, v1 - v0), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    window = cv2.createHanningWindow((u1 - u0, v1 - v0), cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(expected, printed, window)
    return dx / ppmm, dy / ppmm, float(np.abs(expected - printed).mean())


def test_single_page_true_size_and_content(make_run, tmp_path):
    dpi, size_m = 60.0, (0.18, 0.18)
    w_px = round(size_m[0] / 0.0254 * dpi)  # 425
    dots = [(212, 100), (100, 212), (325, 212), (212, 325)]  # 225 px = 95.25 mm apart
    run = make_run("stop", size_m=size_m, dpi=dpi, image=_blue_dots(w_px, w_px, dots))
    job = export_pdf(run, tmp_path / "out" / "stop.pdf")
    assert job.path.is_file() and len(job.pages) == 1 and job.grid.count == 1

    # the image placement in the PDF, in points, is the patch's size in metres
    import pypdfium2

    doc = pypdfium2.PdfDocument(str(job.path))
    images = [o for o in doc[0].get_objects() if o.type == pypdfium2.raw.FPDF_PAGEOBJ_IMAGE]
    left, bottom, right, top = images[0].get_bounds()
    doc.close()
    assert right - left == pytest.approx(180 * MM_TO_PT, abs=0.01)
    assert top - bottom == pytest.approx(180 * MM_TO_PT, abs=0.01)
    assert left == pytest.approx(10 * MM_TO_PT, abs=0.01)

    page = render_pages(job.path, RENDER_DPI)[0]
    px_per_mm = RENDER_DPI / 25.4
    cents = _dot_centroids_px(page)
    assert len(cents) == 4
    span_mm = (cents[2][0] - cents[1][0]) / px_per_mm, (cents[3][1] - cents[0][1]) / px_per_mm
    expected_mm = 225 / dpi * 25.4
    assert span_mm == pytest.approx((expected_mm, expected_mm), abs=0.2)

    # the printed area: non-white pixels inside the content area span exactly 180 x 180 mm
    content = job.frame.content
    y0, y1 = int(content.y_mm * px_per_mm) - 20, int(content.y1_mm * px_per_mm)
    inked = np.argwhere(page[y0:y1].min(-1) < 245)
    top_mm, left_mm = (inked.min(0) + [y0, 0]) / px_per_mm
    height_mm, width_mm = (inked.max(0) - inked.min(0) + 1) / px_per_mm
    assert (width_mm, height_mm) == pytest.approx((180, 180), abs=0.3)
    assert (left_mm, top_mm) == pytest.approx((10, 10), abs=0.3)

    original = cv2.cvtColor(cv2.imread(str(run / "patch.png")), cv2.COLOR_BGR2RGB)
    dx_mm, dy_mm, _ = placement_error_mm(page, job.pages[0].images[0], RENDER_DPI, original, inset_mm=60)
    assert abs(dx_mm) < 0.1 and abs(dy_mm) < 0.1

    # content matches patch.png inside the octagon (away from the cut line)
    x0, yy0 = int(round(10 * px_per_mm)), int(round(10 * px_per_mm))
    side = int(round(180 * px_per_mm))
    printed = cv2.resize(page[yy0:yy0 + side, x0:x0 + side], (w_px, w_px), interpolation=cv2.INTER_AREA)
    inside = np.zeros((w_px, w_px), np.uint8)
    cv2.fillPoly(inside, [np.round(face_outline("stop_sign", w_px, w_px)).astype(np.int32)], 1)
    inside = cv2.erode(inside, np.ones((15, 15), np.uint8)).astype(bool)
    diff = np.abs(printed.astype(int) - original.astype(int))[inside]
    assert diff.mean() < 2.5 and np.percentile(diff, 99) < 30

    # the octagonal cut line is drawn
    cut = (page[..., 0] > 180) & (page[..., 1] < 60) & (page[..., 2] > 100)
    assert cut.sum() > 1000
    text = page_texts(job.path)[0]
    assert "test-patch" in text and "180 x 180 mm" in text and "100 mm" in text


def test_tiled_road_marking_reassembles(make_run, tmp_path):
    dpi, size_m = 20.0, (3.5, 3.6)
    w_px, h_px = round(size_m[0] / 0.0254 * dpi), round(size_m[1] / 0.0254 * dpi)
    image = patch_image(w_px, h_px, block_px=12)  # 15 mm blocks: a misplaced tile shows
    run = make_run("road", size_m=size_m, dpi=dpi, slot_kind="road", sign_kind=None, patch_id="road-test", image=image)
    job = export_pdf(run, tmp_path / "road.pdf", paper="A4", overlap_mm=10, max_tiles=400)
    grid = job.grid
    assert (grid.rows, grid.cols) == (15, 20) and job.frame.orientation == "portrait"
    assert [p.kind for p in job.pages].count("tile") == 300 and job.pages[0].kind == "assembly"

    render_dpi = dpi  # one rendered pixel per patch pixel
    ppmm = render_dpi / 25.4
    pages = render_pages(job.path, render_dpi)
    canvas = np.zeros((round(3600 * ppmm), round(3500 * ppmm), 3), np.uint8)
    keep = np.zeros(canvas.shape[:2], bool)
    half = grid.overlap_mm / 2
    content = job.frame.content
    for record, page in zip(job.pages, pages):
        if record.kind != "tile":
            continue
        t = record.tile
        r = t.region
        # this tile's own part: up to the middle of each overlap
        ox0 = r.x_mm + (half if t.col > 0 else 0)
        ox1 = r.x1_mm - (half if t.col < grid.cols - 1 else 0)
        oy0 = r.y_mm + (half if t.row > 0 else 0)
        oy1 = r.y1_mm - (half if t.row < grid.rows - 1 else 0)
        px = [round(v * ppmm) for v in (ox0, ox1, oy0, oy1)]
        qx = round((content.x_mm + ox0 - r.x_mm) * ppmm)
        qy = round((content.y_mm + oy0 - r.y_mm) * ppmm)
        w, h = px[1] - px[0], px[3] - px[2]
        canvas[px[2]:px[3], px[0]:px[1]] = page[qy:qy + h, qx:qx + w]
        keep[px[2]:px[3], px[0]:px[1]] = True
    assert keep.all()

    # ignore narrow bands around seams (cut lines) and the crosshairs
    ignore = np.zeros(canvas.shape[:2], bool)
    band = round(1.5 * ppmm)
    for c in range(1, grid.cols):
        x = round((grid.tile(0, c).region.x_mm + half) * ppmm)
        ignore[:, x - band:x + band] = True
    for r_ in range(1, grid.rows):
        y = round((grid.tile(r_, 0).region.y_mm + half) * ppmm)
        ignore[y - band:y + band] = True
    arm = round((grid.mark_arm_mm + 1) * ppmm)
    for mx, my in grid.marks_mm:
        x, y = round(mx * ppmm), round(my * ppmm)
        ignore[max(0, y - arm):y + arm, max(0, x - arm):x + arm] = True
    edge = round(1.0 * ppmm)  # the outer cut line
    ignore[:edge] = ignore[-edge:] = True
    ignore[:, :edge] = ignore[:, -edge:] = True
    assert ignore.mean() < 0.25

    original = cv2.cvtColor(cv2.imread(str(run / "patch.png")), cv2.COLOR_BGR2RGB)
    assert original.shape == canvas.shape
    diff = cv2.absdiff(canvas, original).max(-1)[~ignore]
    # rendering at 1 px per patch pixel resamples block edges; a tile 1 px (1.3 mm) off gives ~6 and 5 %
    assert diff.mean() < 5.0
    assert np.mean(diff > 40) < 0.04

    # a few tiles rendered finely: each lies where the layout says, to a fraction of a millimetre
    numbers = [1, 2, 21, 150, 299, 300]
    fine = render_pages(job.path, 100.0, numbers)  # page index = tile number (page 0 is the assembly)
    for number, page in zip(numbers, fine):
        record = job.pages[number]
        assert record.tile.number == number
        dx_mm, dy_mm, grey_diff = placement_error_mm(page, record.images[0], 100.0, original)
        assert abs(dx_mm) < 0.3 and abs(dy_mm) < 0.3, (number, dx_mm, dy_mm)
        assert grey_diff < 2.0

    # every tile page is labelled with its row and column
    texts = page_texts(job.path)
    assert "tile 21 of 300 (row 2, column 1)" in texts[21]
    assert all("road-test" in t and "3500 x 3600 mm" in t and "100 mm" in t for t in texts)  # label, scale bar
    assert "assembly" in texts[0].lower()


def test_too_many_tiles_fails_cleanly(make_run, tmp_path):
    run = make_run("road", size_m=(3.5, 3.6), dpi=10.0, slot_kind="road", sign_kind=None)
    out = tmp_path / "out" / "road.pdf"
    with pytest.raises(TilingError, match=r"needs 300 \(15 x 20\) in portrait.*max_tiles=64"):
        export_pdf(run, out)
    assert not out.exists()
    assert not list(out.parent.glob("*")) if out.parent.exists() else True


def test_error_while_drawing_leaves_no_partial_pdf(make_run, tmp_path, monkeypatch):
    import patchsim.printing.pdf as pdf

    run = make_run("stop", size_m=(0.75, 0.75), dpi=20.0)
    out = tmp_path / "stop.pdf"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pdf, "_draw_tile", boom)
    with pytest.raises(RuntimeError):
        export_pdf(run, out)
    assert list(tmp_path.glob("*.pdf")) == [] and list(tmp_path.glob(".stop.pdf*")) == []


def test_orientation_auto_picks_fewer_tiles(make_run, tmp_path):
    run = make_run("wide", size_m=(0.27, 0.17), dpi=20.0, slot_kind="road", sign_kind=None)
    auto = export_pdf(run, tmp_path / "auto.pdf")
    assert auto.frame.orientation == "landscape" and auto.grid.count == 1
    portrait = export_pdf(run, tmp_path / "portrait.pdf", orientation="portrait", paper="Letter")
    assert portrait.grid.count == 2 and portrait.frame.paper == "Letter"
    custom = export_pdf(run, tmp_path / "custom.pdf", paper="custom", custom_size_mm=(400, 300), margin_mm=5)
    assert custom.grid.count == 1 and (custom.frame.width_mm, custom.frame.height_mm) == (300, 400)  # tie: portrait
    custom = export_pdf(run, tmp_path / "custom.pdf", paper="custom", custom_size_mm=(400, 300), margin_mm=5,
                        orientation="landscape")
    page = render_pages(custom.path, 25.4)[0]  # 1 px per mm
    assert page.shape[:2] == (300, 400)


STICKERS = [{"x_m": 0.1, "y_m": 0.2, "w_m": 0.12, "h_m": 0.12},
            {"x_m": 0.45, "y_m": 0.25, "w_m": 0.12, "h_m": 0.12},
            {"x_m": 0.3, "y_m": 0.5, "w_m": 0.15, "h_m": 0.08}]


def test_sticker_sheets_and_placement_guide(make_run, tmp_path):
    run = make_run("stickers", size_m=(0.75, 0.75), dpi=50.0, mask_kind="stickers", stickers_m=STICKERS)
    job = export_pdf(run, tmp_path / "stickers.pdf")
    kinds = [p.kind for p in job.pages]
    assert kinds[0] == "guide" and kinds.count("stickers") >= 1
    texts = page_texts(job.path)
    guide = texts[0]
    assert "Placement guide" in guide and "from left" in guide and "1:5" in guide
    for s in STICKERS:  # distances from the face's left and top edges, in mm
        assert f"{s['x_m'] * 1000:.0f}" in guide and f"{s['y_m'] * 1000:.0f}" in guide
    assert all(f"#{i}" in "".join(texts[1:]) for i in (1, 2, 3))

    # each sticker's cut outline is on a sheet at true size, around the sticker's own pixels
    assert sorted(p.number for p in job.stickers) == [1, 2, 3]
    ppmm = RENDER_DPI / 25.4
    sheets = render_pages(job.path, RENDER_DPI, list(range(1, len(job.pages))))
    original = cv2.cvtColor(cv2.imread(str(run / "patch.png")), cv2.COLOR_BGR2RGB)
    for placement, s in zip(job.stickers, STICKERS):
        page = sheets[placement.page]
        cut = placement.cut
        assert (cut.w_mm, cut.h_mm) == pytest.approx((s["w_m"] * 1000, s["h_m"] * 1000))
        # magenta line along the top edge of the cut rectangle
        y = round(cut.y_mm * ppmm)
        row = page[y - 2:y + 3, round((cut.x_mm + 5) * ppmm):round((cut.x1_mm - 5) * ppmm)]
        magenta = (row[..., 0] > 180) & (row[..., 1] < 60) & (row[..., 2] > 100)
        assert magenta.any(0).mean() > 0.95
        # inner pixels match the sticker's region of patch.png
        inset = 3.0
        inner = page[round((cut.y_mm + inset) * ppmm):round((cut.y1_mm - inset) * ppmm),
                     round((cut.x_mm + inset) * ppmm):round((cut.x1_mm - inset) * ppmm)]
        sx = 50.0 / 25.4
        ref = original[round((s["y_m"] * 1000 + inset) * sx):round((s["y_m"] * 1000 + s["h_m"] * 1000 - inset) * sx),
                       round((s["x_m"] * 1000 + inset) * sx):round((s["x_m"] * 1000 + s["w_m"] * 1000 - inset) * sx)]
        printed = cv2.resize(inner, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_AREA)
        assert np.abs(printed.astype(int) - ref.astype(int)).mean() < 4


def test_sticker_too_big_for_paper(make_run, tmp_path):
    big = [{"x_m": 0.0, "y_m": 0.0, "w_m": 0.3, "h_m": 0.3}]
    run = make_run("big", size_m=(0.75, 0.75), dpi=20.0, mask_kind="stickers", stickers_m=big)
    with pytest.raises(TilingError, match="sticker 1 .* does not fit"):
        export_pdf(run, tmp_path / "big.pdf")
    assert not (tmp_path / "big.pdf").exists()


def test_missing_and_invalid_sources_name_the_file(make_run, tmp_path):
    with pytest.raises(ConfigError, match="has no patch.json"):
        export_pdf(tmp_path, tmp_path / "x.pdf")
    run = make_run("r", size_m=(0.2, 0.2), dpi=20.0)
    (run / "mask.png").unlink()
    with pytest.raises(ConfigError, match=r"mask\.png: image not found"):
        export_pdf(run, tmp_path / "x.pdf")
    (run / "mask.png").write_bytes(b"not a png")
    with pytest.raises(ConfigError, match=r"mask\.png: not a readable image"):
        export_pdf(run, tmp_path / "x.pdf")
    (run / "patch.json").write_text("{ nope")
    with pytest.raises(ConfigError, match=r"patch\.json:1: invalid JSON"):
        export_pdf(run / "patch.json", tmp_path / "x.pdf")
    run2 = make_run("r2", size_m=(0.2, 0.2), dpi=20.0)
    doc = json.loads((run2 / "patch.json").read_text())
    doc["print_dpi"] = 40.0
    (run2 / "patch.json").write_text(json.dumps(doc))
    with pytest.raises(ShapeError, match=r"patch\.png: image is 157x157 px.*needs 315x315"):
        export_pdf(run2, tmp_path / "x.pdf")
    del doc["slot"]
    (run2 / "patch.json").write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="key 'slot': missing key"):
        export_pdf(run2, tmp_path / "x.pdf")
    assert not (tmp_path / "x.pdf").exists()


def test_file_mask_prints_white_outside_and_outlines_the_mask(make_run, tmp_path, monkeypatch):
    run = make_run("blob", size_m=(0.15, 0.15), dpi=40.0, slot_kind="road", sign_kind=None, mask_kind="file")
    mask = np.zeros((236, 236), np.uint8)
    cv2.circle(mask, (118, 118), 80, 255, -1)
    cv2.imwrite(str(run / "mask.png"), mask)
    monkeypatch.chdir(tmp_path)  # the default output goes to ./printables/<patch id>.pdf
    job = export_pdf(run)
    assert job.path.resolve() == tmp_path / "printables" / "test-patch.pdf" and job.path.is_file()
    assert len(job.pages) == 1 and len(job.pages[0].cuts_mm) == 1
    mm_per_px = 150 / 236
    radius_mm = np.linalg.norm(job.pages[0].cuts_mm[0] - (10 + 118.5 * mm_per_px, 10 + 118.5 * mm_per_px), axis=1)
    assert np.allclose(radius_mm, 80 * mm_per_px, atol=0.8)  # through the boundary pixels' centres
    page = render_pages(job.path, 50.8)[0]  # 2 px per mm
    assert (page[round((10 + 3) * 2), round((10 + 3) * 2)] > 250).all()  # corner outside the circle: white
    assert (page[round((10 + 75) * 2), round((10 + 75) * 2)] < 250).any()  # centre: printed

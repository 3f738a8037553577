"""Tiling geometry, paper sizes and sticker packing (no drawing)."""

from __future__ import annotations

import pytest

from patchsim.printing.layout import (
    PAPER_SIZES_MM,
    Rect,
    TilingError,
    crop_box_px,
    nice_scale,
    pack_stickers,
    page_frame,
    plan_tiles,
)


def test_paper_sizes_and_orientation():
    assert PAPER_SIZES_MM["A4"] == (210.0, 297.0)
    f = page_frame("a4", "landscape", margin_mm=10)
    assert (f.width_mm, f.height_mm) == (297.0, 210.0)
    assert f.content.x_mm == 10 and f.content.w_mm == pytest.approx(277.0)
    c = page_frame("custom", "portrait", 5, custom_size_mm=(300, 200))
    assert (c.width_mm, c.height_mm) == (200.0, 300.0)
    with pytest.raises(TilingError, match="unknown paper"):
        page_frame("B7")
    with pytest.raises(TilingError, match="leaves"):
        page_frame("A4", margin_mm=100)


def test_tiles_cover_patch_with_exact_overlap():
    content = Rect(10, 10, 190, 263)
    grid = plan_tiles(3500, 3600, content, overlap_mm=10)
    assert (grid.rows, grid.cols) == (15, 20)
    assert all(t.region.w_mm <= content.w_mm + 1e-9 and t.region.h_mm <= content.h_mm + 1e-9 for t in grid.tiles)
    last = grid.tile(grid.rows - 1, grid.cols - 1).region
    assert last.x1_mm == pytest.approx(3500) and last.y1_mm == pytest.approx(3600)
    a, b = grid.tile(0, 0).region, grid.tile(0, 1).region
    assert a.x1_mm - b.x_mm == pytest.approx(10)
    # every mark lies inside the overlap strip of the tiles that print it
    for x, y in grid.marks_mm:
        holders = [t for t in grid.tiles if t.region.contains(x, y)]
        assert len(holders) >= 2


def test_single_tile_when_it_fits():
    grid = plan_tiles(180, 180, Rect(10, 10, 190, 263), overlap_mm=10)
    assert grid.count == 1 and grid.marks_mm == []
    assert grid.tiles[0].region == Rect(0, 0, 180, 180)


def test_sticker_packing_and_oversize():
    content = Rect(10, 10, 190, 263)
    placed = pack_stickers([(80, 80)] * 7, content, gap_mm=8, label_mm=4)
    assert [p.page for p in placed] == [0, 0, 0, 0, 1, 1, 1]  # 2 x 2 boxes of 88 x 92 mm a page
    for p in placed:
        assert content.contains(p.cut.x_mm, p.cut.y_mm) and content.contains(p.cut.x1_mm, p.cut.y1_mm)
    with pytest.raises(TilingError, match="sticker 1"):
        pack_stickers([(300, 300)], content, gap_mm=8, label_mm=4)


def test_crop_box_and_nice_scale():
    box, rect = crop_box_px(Rect(10.2, 0, 20, 5), (2.0, 2.0), (100, 100))
    assert box == (20, 0, 61, 10)
    assert rect.x_mm == 10.0 and rect.w_mm == 20.5
    assert nice_scale((750, 750), (180, 200)) == 5
    assert nice_scale((100, 100), (180, 200)) == 1

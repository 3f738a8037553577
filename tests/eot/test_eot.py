"""EOT placement, replay and gradients on synthetic scenes (no simulator needed)."""

import dataclasses
import json

import cv2
import numpy as np
import pytest
import torch

from patchsim.config import FieldError
from patchsim.eot import ops
from patchsim.eot.pipeline import EOT, EOTConfig
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import (
    Blur,
    Compression,
    Haze,
    Lighting,
    Occlusion,
    Placement,
    PrinterError,
    SensorNoise,
    params_from_json,
    params_to_json,
    select,
)


def _bank(n=3, h=160, w=224):
    g = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, h, w, generator=g) * 255).to(torch.uint8)
    corners = torch.tensor([[[80.0, 40.0], [140.0, 44.0], [138.0, 100.0], [82.0, 96.0]]]).repeat(n, 1, 1)
    corners[1] += 10
    return SceneBank(images, torch.ones(n, 3, h, w).half(), corners, torch.tensor([10.0, 20.0, 30.0][:n]),
                     np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]]), "sign_face", (0.75, 0.75), None)


def _identity_cfg(**over) -> EOTConfig:
    cfg = EOTConfig(
        crop_px=0,
        placement=Placement(scale=(1.0, 1.0), rotation_deg=0.0, tilt=0.0, corner_noise=0.0),
        printer_error=PrinterError(0.0, 0.0), occlusion=Occlusion(p=0.0),
        lighting=Lighting((1, 1), (1, 1), (1, 1), (0, 0)), haze=Haze(p=0.0),
        blur=Blur(sigma_px=(0.0, 0.0), motion_p=0.0), noise=SensorNoise(std=(0.0, 0.0)),
        compression=Compression(p=0.0))
    return dataclasses.replace(cfg, **over)


def test_homography_places_a_known_patch_on_known_corners():
    """Compare with OpenCV's warp of the same patch to the same (perspective) corners."""
    patch = np.zeros((40, 40, 3), np.float32)
    patch[:20, :20] = [1, 0, 0]
    patch[20:, 20:] = [0, 0, 1]
    patch[:20, 20:] = [0, 1, 0]
    corners = np.float32([[60, 30], [150, 40], [140, 120], [70, 110]])
    H = ops.quad_homography((40, 40), torch.from_numpy(corners)[None].double())
    grid = ops.patch_grid(H, torch.arange(200)[None], torch.arange(160)[None], (40, 40))
    warped = ops.sample_patch(torch.from_numpy(patch).permute(2, 0, 1)[None].double(), grid)[0].permute(1, 2, 0).numpy()
    # OpenCV puts pixel centres at integers; patchsim at +0.5
    shift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
    H_cv = shift @ H[0].numpy() @ np.linalg.inv(shift)
    expected = cv2.warpPerspective(patch, H_cv, (200, 160), flags=cv2.INTER_LINEAR)
    inside = cv2.warpPerspective(np.ones((40, 40), np.float32), H_cv, (200, 160)) > 0.999
    assert np.abs(warped[inside] - expected[inside]).max() < 1e-3
    # the red quadrant lands next to the first corner, the blue one next to the third
    tl, br = corners[0] + [6, 6], corners[2] - [6, 6]
    assert warped[int(tl[1]), int(tl[0])].argmax() == 0
    assert warped[int(br[1]), int(br[0])].argmax() == 2


def test_patch_lands_on_the_scene_quad_and_boxes_follow():
    bank = _bank()
    eot = EOT(_identity_cfg())
    params = eot.sample(bank, 2, torch.Generator().manual_seed(1), scenes=torch.tensor([0, 1]))
    colours = torch.zeros(3, 32, 32)
    colours[1] = 1.0  # green
    out = eot.render(colours, torch.ones(1, 32, 32), params, bank)
    img = out.images[0].permute(1, 2, 0).numpy()
    poly = bank.corners[0].numpy()
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1)
    inner = cv2.erode(mask, np.ones((5, 5), np.uint8)).astype(bool)  # bilinear edges blend over ~1 patch pixel
    assert np.allclose(img[inner], [0, 1, 0], atol=2e-4)
    assert torch.allclose(out.boxes[0], torch.tensor([80.0, 40.0, 140.0, 100.0]), atol=1e-3)
    assert torch.allclose(out.boxes[1], torch.tensor([90.0, 50.0, 150.0, 110.0]), atol=1e-3)


def test_replaying_stored_params_gives_identical_images(tmp_path):
    bank = _bank()
    eot = EOT(EOTConfig(crop_px=96, occlusion=Occlusion(p=0.5), haze=Haze(p=0.5), compression=Compression(p=0.5)))
    params = eot.sample(bank, 4, torch.Generator().manual_seed(7))
    colours = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(2))
    mask = torch.ones(1, 24, 24)
    first = eot.render(colours, mask, params, bank).images
    path = tmp_path / "params.json"
    path.write_text(json.dumps(params_to_json(params)))
    replayed = eot.render(colours, mask, params_from_json(json.loads(path.read_text())), bank).images
    assert torch.equal(first, replayed)
    again = eot.sample(bank, 4, torch.Generator().manual_seed(7))
    assert torch.equal(eot.render(colours, mask, again, bank).images, first)


STRONG = {
    "placement": Placement(scale=(0.8, 1.2), rotation_deg=20, tilt=0.2, corner_noise=0.03),
    "printer_error": PrinterError(0.1, 0.05),
    "lighting": Lighting((0.5, 1.5), (0.7, 1.3), (0.7, 1.4), (-1, 1)),
    "haze": Haze(p=1.0, visibility_m=(30.0, 60.0)),
    "blur": Blur(sigma_px=(1.0, 2.0), motion_p=1.0, motion_px=(2.0, 5.0)),
    "noise": SensorNoise(std=(0.02, 0.05)),
    "compression": Compression(p=1.0, quality=(30, 60)),
    "occlusion": Occlusion(p=1.0, max_area=0.1),
}


@pytest.mark.parametrize("name", sorted(STRONG))
def test_gradients_reach_the_patch_through_each_transform(name):
    bank = _bank()
    eot = EOT(_identity_cfg(**{name: STRONG[name]}, crop_px=128))
    params = eot.sample(bank, 3, torch.Generator().manual_seed(3))
    colours = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    out = eot.render(colours, torch.ones(1, 24, 24), params, bank)
    (out.images * torch.linspace(0, 1, out.images.shape[-1])).sum().backward()
    assert torch.isfinite(colours.grad).all()
    assert colours.grad.abs().sum() > 0


def test_every_transform_at_once_and_the_clean_twin():
    bank = _bank()
    eot = EOT(_identity_cfg(**STRONG, crop_px=128))
    params = eot.sample(bank, 3, torch.Generator().manual_seed(5))
    colours = torch.rand(3, 24, 24).requires_grad_(True)
    adv = eot.render(colours, torch.ones(1, 24, 24), params, bank)
    adv.images.mean().backward()
    assert colours.grad.abs().sum() > 0
    clean = eot.render(None, None, params, bank)
    assert clean.images.shape == adv.images.shape
    far = adv.corners[:, :, 0].max(1).values.long() + 12  # columns right of the slot see the same scene
    assert torch.allclose(adv.images[0, :, :, far[0]:], clean.images[0, :, :, far[0]:], atol=0.08)


def test_differentiable_window_gives_the_same_pixels_as_one_full_pass():
    """With gradients on, only a window around the slot is differentiated; the pixels must not change."""
    bank = _bank()
    eot = EOT(_identity_cfg(**STRONG, crop_px=160))
    params = eot.sample(bank, 3, torch.Generator().manual_seed(11))
    colours = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        exact = eot.render(colours, torch.ones(1, 24, 24), params, bank).images
    split = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), params, bank).images
    assert split.requires_grad
    assert torch.allclose(split, exact, atol=1e-5)


def test_window_camera_in_one_step_matches_the_transforms_one_by_one():
    """The window's camera as one autograd step (slopes, masks and the blur's transpose): the values and the
    gradient of the same transforms applied one by one with autograd, with an occluder, clamped pixels,
    samples with and without compression and pixels the patch covers partly."""
    from patchsim.eot.window import camera_window

    g = torch.Generator().manual_seed(8)
    lighting = Lighting((0.6, 2.5), (0.7, 1.3), (0.7, 1.4), (-1, 1))  # bright enough to clamp
    eot = EOT(_identity_cfg(**{**STRONG, "lighting": lighting, "haze": Haze(p=1.0, visibility_m=(300.0, 600.0)),
                               "compression": Compression(p=0.5, quality=(30, 60))}))
    params = eot.sample(_bank(), 6, torch.Generator().manual_seed(9))
    assert 0 < int(params["compression"]["on"].sum()) < 6
    r = ops.BLUR_RADIUS_PX
    shape = (6, 3, 16 + 2 * r, 24 + 2 * r)
    warped = torch.rand(shape, generator=g, dtype=torch.float64).requires_grad_(True)
    region, light = torch.rand(shape, generator=g, dtype=torch.float64), 0.6 + torch.rand(shape, generator=g,
                                                                                              dtype=torch.float64)
    cover = torch.rand((6, 2) + shape[2:], generator=g, dtype=torch.float64).round_()
    cover[:, 0, :, :8] = 0.5  # partly covered
    occ, pivot = torch.rand(6, 3, generator=g, dtype=torch.float64), torch.rand(6, generator=g, dtype=torch.float64)
    origin = torch.randint(0, 40, (6, 2), generator=g)
    params = {k: {n: t.double() if t.is_floating_point() else t for n, t in v.items()} if isinstance(v, dict) else v
              for k, v in params.items()}
    fused = camera_window(eot.cfg, warped, region, light, cover, occ, params, pivot, origin)
    one_by_one = eot._camera(ops.blend(region, light, warped, cover, occ), params, pivot, window_origin=origin)
    assert fused.shape == (6, 3, 16, 24) and ((one_by_one == 0) | (one_by_one == 1)).any()
    assert torch.allclose(fused, one_by_one, atol=1e-9)
    w = torch.rand(fused.shape, generator=g, dtype=torch.float64)
    grad_fused, = torch.autograd.grad(fused, warped, w)
    grad_ref, = torch.autograd.grad(one_by_one, warped, w)
    assert grad_ref.abs().sum() > 0 and torch.allclose(grad_fused, grad_ref, atol=1e-9)


@pytest.mark.parametrize("crop_px", [0, 96])
def test_differentiable_window_at_the_frame_edge_matches_the_full_pass(crop_px):
    """A slot against the frame's (or crop window's) edge: the window's context is the replicated edge,
    as the full pass pads it; the slot's light varies across the frame."""
    g = torch.Generator().manual_seed(3)
    bank = _bank()
    bank.shade = (0.5 + torch.rand(bank.shade.shape, generator=g)).half()
    bank.corners = torch.tensor([[[1.0, 2.0], [44.0, 1.0], [46.0, 40.0], [0.5, 42.0]]]).repeat(3, 1, 1)
    eot = EOT(_identity_cfg(**STRONG, crop_px=crop_px))
    params = eot.sample(bank, 6, torch.Generator().manual_seed(21))
    colours = torch.rand(3, 24, 24, generator=g)
    with torch.no_grad():
        exact = eot.render(colours, torch.ones(1, 24, 24), params, bank).images
    split = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), params, bank)
    assert split.images.requires_grad and (split.corners.min(1).values < 4).any()  # the slot is at the edge
    assert torch.allclose(split.images, exact, atol=1e-5)


def test_blur_and_warp_pass_gradcheck():
    x = torch.rand(1, 2, 9, 9, dtype=torch.float64, requires_grad=True)
    sig = torch.tensor([0.8], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: ops.blur(t, sig, torch.tensor([2.0], dtype=torch.float64),
                                                       torch.tensor([0.4], dtype=torch.float64), radius=2), (x,))
    H = ops.quad_homography((9, 9), torch.tensor([[[1.0, 1.0], [8.0, 2.0], [7.0, 8.0], [2.0, 7.0]]],
                                                 dtype=torch.float64))
    grid = ops.patch_grid(H, torch.arange(10)[None], torch.arange(10)[None], tuple(x.shape[-2:]))
    assert torch.autograd.gradcheck(lambda t: ops.sample_patch(t, grid), (x,))


def test_memory_layout_changes_in_blocks_keep_every_value():
    x = torch.rand(1, 7, 150, 130, generator=torch.Generator().manual_seed(1))  # not a whole number of blocks
    assert x.shape[-2] * x.shape[-1] >= 4 * ops.LAYOUT_BLOCK_PX  # the blocked path
    last = ops._to_channels_last(x)
    assert last.is_contiguous(memory_format=torch.channels_last) and torch.equal(last, x)
    back = ops._from_channels_last(last)
    assert back.is_contiguous() and torch.equal(back, x)


def test_exposure_gamma_and_clamp_match_their_plain_forms_and_pass_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(3, 3, 5, 6, generator=g, dtype=torch.float64) * 1.6 - 0.3).requires_grad_(True)
    scale = torch.rand(3, 3, generator=g, dtype=torch.float64) + 0.5
    offset = torch.rand(3, generator=g, dtype=torch.float64) * 0.1
    gamma = torch.rand(3, generator=g, dtype=torch.float64) + 0.6
    plain = (x * scale[..., None, None] + offset[:, None, None, None]).clamp(1e-4, 1) ** gamma[:, None, None, None]
    fused = ops.exposure_gamma(x, scale, offset, gamma)
    assert torch.allclose(fused, plain)
    w = torch.rand(plain.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.autograd.grad(fused, x, w)[0], torch.autograd.grad(plain, x, w)[0])
    assert torch.autograd.gradcheck(lambda t: ops.exposure_gamma(t, scale, offset, gamma), (x,))
    assert torch.autograd.gradcheck(lambda t: ops.clamp(t, 0, 1), (x,))
    with torch.no_grad():  # in place on its own result, same values
        assert torch.equal(ops.exposure_gamma(x, scale, offset, gamma), fused.detach())


def test_jpeg_like_backward_is_the_straight_through_round_trip():
    """The custom backward (the clamp's mask) equals autograd through the round trip with a straight-through
    rounding: the DCT, the tables and the colour matrices cancel."""
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 16, 24, generator=g, dtype=torch.float64).requires_grad_(True)
    quality = torch.tensor([30.0, 90.0], dtype=torch.float64)
    to_ycc, from_ycc, shift, kron, base = ops._jpeg_constants(x.device, x.dtype)
    ycc = torch.einsum("ij,bjhw->bihw", to_ycc, x) - shift[:, None, None]
    blocks = ycc.reshape(2, 3, 2, 8, 3, 8).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, -1, 64)
    table = (base[None] * ops._quality_scale(quality).reshape(2, 1, 1)).clamp(min=1)
    q = blocks @ (kron.T / table[:, :, None, :])
    q = q + (torch.round(q) - q).detach()
    rec = (q @ (table[..., None] * kron)).reshape(2, 3, 2, 3, 8, 8).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 16, 24)
    reference = torch.einsum("ij,bjhw->bihw", from_ycc, rec + shift[:, None, None]).clamp(0, 1)
    out = ops.jpeg_like(x, quality)
    assert torch.allclose(out, reference)
    w = torch.rand(out.shape, generator=g, dtype=torch.float64)
    assert torch.allclose(torch.autograd.grad(out, x, w)[0], torch.autograd.grad(reference, x, w)[0], atol=1e-5)


def test_jpeg_like_is_close_to_identity_at_high_quality_and_lossy_at_low():
    img = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0))
    smooth = torch.nn.functional.avg_pool2d(img, 5, 1, 2)
    hi = ops.jpeg_like(smooth, torch.tensor([98.0, 98.0]))
    lo = ops.jpeg_like(smooth, torch.tensor([10.0, 10.0]))
    assert (hi - smooth).abs().mean() < 0.01 < (lo - smooth).abs().mean()


def test_reused_backgrounds_give_the_pixels_of_their_params_and_replay_from_any_step():
    from patchsim.eot.pipeline import Background
    from patchsim.eot.pool import BackgroundPool

    bank = _bank(h=320, w=448)  # 256 px crop windows at varying origins
    eot = EOT(_identity_cfg(**STRONG, crop_px=256))
    pool = BackgroundPool(eot, bank, size=6, reuse=2.0, batch=3, seed=7)
    assert pool.steps_per_pool == 4  # 6 backgrounds used twice each by batches of 3
    colours = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(12))
    drawn = []
    for step in range(6):
        params, background = pool.draw(step, (24, 24))
        assert (params["crop"]["origin"] > 0).any()
        out = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), params, bank,
                         background=background)
        with torch.no_grad():
            exact = eot.render(colours, torch.ones(1, 24, 24), params, bank)  # no reuse, no precomputed layout
        assert out.images.requires_grad and torch.allclose(out.images, exact.images, atol=1e-5)
        assert torch.allclose(out.boxes, exact.boxes) and torch.allclose(out.corners, exact.corners)
        out.images.sum().backward()  # the step is done with its frames
        # the reused background really is used: a black one stays black away from the slot
        black = Background(torch.zeros_like(background.images), background.pivot, background.scene,
                           background.origin)
        dark = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), params, bank,
                          background=black).images.detach()
        for i in range(3):
            assert float((dark[i] == 0).float().mean()) > 0.6  # outside the window: the black background
            x0, y0 = out.corners[i].min(0).values.long().tolist()
            x1, y1 = out.corners[i].max(0).values.long().tolist()
            assert float(dark[i, :, max(y0, 0):y1, max(x0, 0):x1].mean()) > 0.05  # the slot's window is rendered
        drawn.append(params)
    # within a pool the camera repeats, each background as often as the others, and the slot's conditions
    # are fresh; the next pool is new
    first_pool = torch.cat([d["lighting"]["brightness"] for d in drawn[:4]])  # 12 samples from 6 backgrounds
    assert torch.unique(first_pool, return_counts=True)[1].tolist() == [2] * 6
    assert not torch.isin(drawn[4]["lighting"]["brightness"], first_pool).any()
    assert not torch.equal(drawn[0]["placement"]["corners"], drawn[1]["placement"]["corners"])
    # a fresh pool (a resumed run) serves step 5 exactly as the one that went through steps 0-4
    again, _ = BackgroundPool(eot, bank, size=6, reuse=2.0, batch=3, seed=7).draw(5, (24, 24))
    assert json.dumps(params_to_json(again)) == json.dumps(params_to_json(drawn[5]))
    with pytest.raises(ValueError, match="cannot fill"):
        BackgroundPool(eot, bank, size=2, reuse=2.0, batch=3, seed=7)
    # a background's geometry belongs to its own step: the params of another step on the same group are refused
    fresh = BackgroundPool(eot, bank, size=6, reuse=2.0, batch=3, seed=7)
    first, _ = fresh.draw(0, (24, 24))
    for step in range(1, 4):
        same_group, same_frames = fresh.draw(step, (24, 24))
        if torch.equal(same_group["crop"]["origin"], first["crop"]["origin"]):
            break
    assert torch.equal(same_group["scene"], first["scene"])  # each group serves two of the pool's four steps
    with pytest.raises(ValueError, match="worked out for other samples"):
        eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), first, bank, background=same_frames)
    # a background serves one render: its frames now hold that render's patch
    with pytest.raises(ValueError, match="already rendered into"):
        eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), params, bank, background=background)
    # a background of other samples is refused, not pasted into
    other_params, other = pool.draw(8, (24, 24))  # a later pool: other samples
    with pytest.raises(ValueError, match="other samples"):
        eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), drawn[5], bank, background=other)
    # the frames are the pool's: the next draw puts back the pixels a render wrote over, and a background
    # drawn before it refuses to render
    eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), other_params, bank, background=other)
    later_params, later = pool.draw(9, (24, 24))
    with torch.no_grad():
        clean = eot.background(pool._params, bank).images
    assert torch.equal(pool._background.images, clean)
    with pytest.raises(ValueError, match="serve a later draw"):
        eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), other_params, bank, background=other)
    out = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), later_params, bank, background=later)
    with torch.no_grad():
        exact = eot.render(colours, torch.ones(1, 24, 24), later_params, bank).images
    assert torch.allclose(out.images, exact, atol=1e-5)
    # without the patch's size the background carries no geometry, and the render works it out
    plain_params, plain = pool.draw(10)
    assert plain.layout is None
    out = eot.render(colours.clone().requires_grad_(True), torch.ones(1, 24, 24), plain_params, bank, background=plain)
    with torch.no_grad():
        exact = eot.render(colours, torch.ones(1, 24, 24), plain_params, bank).images
    assert torch.allclose(out.images, exact, atol=1e-5)


def test_a_layout_of_several_batches_equals_each_batch_worked_out_alone(monkeypatch):
    import patchsim.eot.pipeline as pipeline

    bank = _bank(h=320, w=448)
    eot = EOT(_identity_cfg(**STRONG, crop_px=256))
    params = eot.sample(bank, 6, torch.Generator().manual_seed(3))
    whole = eot.layout(params, bank, (24, 20), batch=3)
    with pytest.raises(ValueError, match="no single window"):
        _ = whole.roi
    monkeypatch.setattr(pipeline, "LAYOUT_OCCLUSION_MAX", 0)  # too large to make at once: made per batch
    per_batch = eot.layout(params, bank, (24, 20), batch=3)
    assert whole.occlusion is not None and per_batch.occlusion is None
    for k in range(2):
        alone = eot.layout(select(params, list(range(3 * k, 3 * k + 3))), bank, (24, 20))
        for part in (whole.part(k), per_batch.part(k)):
            assert (part.roi.origin.tolist(), part.roi.h, part.roi.w) == (alone.roi.origin.tolist(), alone.roi.h,
                                                                           alone.roi.w)
            assert part.occlusion.sum() > 0 and torch.equal(part.occlusion, alone.occlusion)
            for name in ("corners", "H", "boxes"):
                assert torch.allclose(getattr(part, name), getattr(alone, name), atol=1e-4), name


def test_backgrounds_rendered_in_chunks_equal_one_render(monkeypatch):
    import patchsim.eot.pipeline as pipeline

    bank = _bank()
    eot = EOT(_identity_cfg(**STRONG, crop_px=96))
    params = eot.sample(bank, pipeline.BACKGROUND_CHUNK + 3, torch.Generator().manual_seed(8))
    chunked = eot.background(params, bank)
    monkeypatch.setattr(pipeline, "BACKGROUND_CHUNK", 1000)
    whole = eot.background(params, bank)
    assert chunked.images.shape == whole.images.shape
    assert torch.allclose(chunked.images, whole.images, atol=1e-6) and torch.equal(chunked.pivot, whole.pivot)
    assert torch.equal(chunked.scene, whole.scene) and torch.equal(chunked.origin, whole.origin)


def test_window_noise_is_the_frames_noise_there():
    noise = SensorNoise(std=(0.01, 0.02))
    p = noise.sample(2, torch.Generator().manual_seed(0))
    for h, w in ((384, 640), (1500, 2100)):  # the second repeats the noise tile
        full = SensorNoise.noise(p, (3, h, w), "cpu")
        origin = torch.tensor([[w - 104, h - 96], [8, 16]])
        win = SensorNoise.noise(p, (3, 96, 104), "cpu", origin=origin)
        assert torch.equal(win[0], full[0, :, h - 96:, w - 104:])
        assert torch.equal(win[1], full[1, :, 16:112, 8:112])


def test_blur_holds_no_subnormal_values():
    """Subnormal floats make the CPU's multiplies many times slower; narrow Gaussians used to make them."""
    tiny = torch.finfo(torch.float32).tiny
    subnormal = lambda t: ((t != 0) & (t.abs() < tiny)).any()  # noqa: E731
    sigma = torch.linspace(0.01, 1.2, 240)
    k = ops.gaussian_kernel1d(sigma, 3)
    assert not subnormal(k) and torch.allclose(k.sum(1), torch.ones(240))
    images = torch.rand(240, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    moving = torch.where(torch.arange(240) % 2 == 0, 3.0, 0.0)
    out = ops.blur(images, sigma, moving, torch.linspace(0, 3, 240))
    assert not subnormal(out)
    # a wide kernel is untouched by the floor
    wide = ops.gaussian_kernel1d(torch.tensor([1.0]), 3)[0]
    x = torch.arange(-3, 4, dtype=torch.float32)
    ref = torch.exp(-0.5 * x ** 2)
    assert torch.allclose(wide, ref / ref.sum())


def test_samples_drawn_in_drives_keep_each_drive_whole_through_the_pool():
    from dataclasses import replace

    from patchsim.eot.pool import BackgroundPool

    bank = replace(_bank(n=3), drive=torch.tensor([4, 4, 9]))  # frames 0 and 1 are views of one drive
    centre = bank.corners.mean(1, keepdim=True)
    # slot sizes 1 : 1.5 : 1.2 across: sorted frame by frame, drive 9's frame would fall between drive 4's two
    bank.corners = centre + (bank.corners - centre) * torch.tensor([1.0, 1.5, 1.2])[:, None, None]
    eot = EOT(_identity_cfg(drive_frames=2))
    params = eot.sample(bank, 8, torch.Generator().manual_seed(3))
    assert params["drive"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    pairs = params["scene"].view(4, 2)
    assert all(bank.drive[p[0]] == bank.drive[p[1]] for p in pairs)  # a drive's frames come from one scene
    assert any(set(p.tolist()) == {0, 1} for p in pairs)  # distinct frames while the drive has enough
    with pytest.raises(ValueError, match="multiple of eot.drive_frames"):
        eot.sample(bank, 7, torch.Generator())
    with pytest.raises(ValueError, match="simulator bank"):
        eot.sample(replace(bank, drive=None), 8, torch.Generator())
    # the pool sorts by slot size but serves whole drives, and the render carries the grouping to the loss
    pool = BackgroundPool(eot, bank, size=8, reuse=2.0, batch=4, seed=1)
    for step in range(4):
        p, background = pool.draw(step, (24, 24))
        assert torch.equal(p["drive"][0::2], p["drive"][1::2]) and p["drive"][0] != p["drive"][2]
        assert torch.equal(bank.drive[p["scene"][0::2]], bank.drive[p["scene"][1::2]])
        batch = eot.render(torch.rand(3, 24, 24, requires_grad=True), torch.ones(1, 24, 24), p, bank,
                           background=background)
        assert torch.equal(batch.drive, p["drive"])
        batch.images.sum().backward()
    assert eot.render(None, None, EOT(_identity_cfg()).sample(bank, 2, torch.Generator()), bank).drive is None


def test_footprint_sampling_is_bilinear_on_a_magnified_patch_and_averages_a_shrunk_one():
    """Where a pixel spans under one texel the footprint read is the bilinear one; over a 3.6x shrunk
    one-texel checkerboard each pixel sees the average grey, where bilinear reads alias to the cells."""
    corners = torch.tensor([[[60.0, 30.0], [150.0, 40.0], [140.0, 120.0], [70.0, 110.0]]], dtype=torch.float64)
    patch = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grid = ops.patch_grid(ops.quad_homography((40, 40), corners), torch.arange(200)[None], torch.arange(160)[None],
                          (40, 40))
    assert torch.allclose(ops.sample_patch_footprint(patch, grid), ops.sample_patch(patch, grid), atol=1e-9)

    checker = ((torch.arange(64)[:, None] + torch.arange(64)[None]) % 2).double()[None, None].expand(1, 3, 64, 64)
    square = torch.tensor([[[20.0, 20.0], [38.0, 20.0], [38.0, 38.0], [20.0, 38.0]]], dtype=torch.float64)
    grid = ops.patch_grid(ops.quad_homography((64, 64), square), torch.arange(22, 36)[None],
                          torch.arange(22, 36)[None], (64, 64))
    footprint, bilinear = ops.sample_patch_footprint(checker, grid), ops.sample_patch(checker, grid)
    assert (footprint - 0.5).abs().max() < 0.05
    assert (bilinear - 0.5).abs().max() > 0.3


def test_footprint_filter_keeps_the_window_equal_to_the_full_pass_and_is_checked():
    bank = _bank()
    eot = EOT(_identity_cfg(**STRONG, crop_px=160, patch_filter="footprint"))
    params = eot.sample(bank, 3, torch.Generator().manual_seed(11))
    colours = torch.rand(3, 24, 24, generator=torch.Generator().manual_seed(12))
    mask = (torch.rand(1, 24, 24, generator=torch.Generator().manual_seed(13)) > 0.5).float()
    with torch.no_grad():
        exact = eot.render(colours, mask, params, bank).images
    leaf = colours.clone().requires_grad_(True)
    split = eot.render(leaf, mask, params, bank).images
    assert torch.allclose(split, exact, atol=1e-5)
    split.sum().backward()
    assert leaf.grad is not None and bool(leaf.grad.abs().sum() > 0)
    with pytest.raises(FieldError, match="patch_filter"):
        EOTConfig(patch_filter="nearest")

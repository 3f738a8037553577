"""Scene banks from the user's photos, and the face-corner proposal."""

import json

import cv2
import numpy as np
import pytest

from patchsim.eot.scenes import load_photo_bank, propose_face_corners
from patchsim.errors import ConfigError


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Simulator frames written as 'photos' with their true face corners."""
    from patchsim.sim.embedded import EmbeddedSimulator
    from patchsim.sim.scenario import load_scenario

    folder = tmp_path_factory.mktemp("photos")
    sc = load_scenario("scenarios/stop_sign_approach.yaml")
    ann = {}
    with EmbeddedSimulator() as sim:
        for i, d in enumerate((10.0, 14.0, 20.0)):
            sim.reset(sc, seed=i)
            frame = sim.set_ego_pose(81.0 - d - sc.camera.forward_m)
            cv2.imwrite(str(folder / f"p{i}.jpg"), frame.image[:, :, ::-1])
            ann[f"p{i}.jpg"] = {"corners": frame.sign("stop_1").face_corners_px.tolist(), "distance_m": d}
    (folder / "corners.json").write_text(json.dumps(ann))
    return folder, ann


def test_photo_bank_holds_frames_corners_and_shading(photos):
    folder, ann = photos
    bank = load_photo_bank(folder, (0.75, 0.75), "stop_sign")
    assert len(bank) == 3 and bank.images.shape[1:] == (3, 384, 640)
    assert np.allclose(bank.corners[0].numpy(), np.array(ann["p0.jpg"]["corners"]), atol=1e-3)
    assert 0.3 < float(bank.shade.float().mean()) < 2.5
    assert bank.distance_m.tolist() == [10.0, 14.0, 20.0]


def test_corner_proposal_finds_the_stop_sign_face(photos):
    folder, ann = photos
    img = cv2.imread(str(folder / "p0.jpg"))[:, :, ::-1]
    proposed = propose_face_corners(img, "stop_sign")
    assert proposed is not None
    truth = np.array(ann["p0.jpg"]["corners"])
    side = np.linalg.norm(truth[1] - truth[0])
    assert np.abs(proposed - truth).max() < 0.12 * side  # within a few pixels on a ~50 px face
    assert propose_face_corners(np.full((100, 100, 3), 120, np.uint8)) is None


def test_bad_annotations_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"corners.json.*not found"):
        load_photo_bank(tmp_path, (0.75, 0.75))
    (tmp_path / "corners.json").write_text(json.dumps({"a.jpg": {"corners": [[0, 0], [1, 1]]}}))
    with pytest.raises(ConfigError, match="listed but not readable"):
        load_photo_bank(tmp_path, (0.75, 0.75))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match=r"a.jpg.corners.*4 \[x, y\] pairs"):
        load_photo_bank(tmp_path, (0.75, 0.75))
    (tmp_path / "corners.json").write_text("{bad json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_photo_bank(tmp_path, (0.75, 0.75))

"""Detector layouts -> h36m17: joint mapping, synthesised joints, confidences, normalisation."""
import numpy as np
import pytest

from posekernels import adapters
from posekernels.data.cameras import normalize_screen_coordinates
from posekernels.skeletons import get_skeleton

COCO = get_skeleton("coco17").joint_names
H36M = get_skeleton("h36m17").joint_names


def _coco(rng, lead=(5,)):
    return rng.uniform(0, 640, size=lead + (17, 2)), rng.uniform(0.2, 1, size=lead + (17,))


def test_coco_to_h36m_rules():
    rng = np.random.default_rng(0)
    kp, sc = _coco(rng)
    out, conf = adapters.coco17_to_h36m17(kp, sc)
    c = {n: i for i, n in enumerate(COCO)}
    h = {n: i for i, n in enumerate(H36M)}
    pelvis = (kp[:, c["LHip"]] + kp[:, c["RHip"]]) / 2
    thorax = (kp[:, c["LShoulder"]] + kp[:, c["RShoulder"]]) / 2
    np.testing.assert_allclose(out[:, h["Hip"]], pelvis)
    np.testing.assert_allclose(out[:, h["Thorax"]], thorax)
    np.testing.assert_allclose(out[:, h["Spine"]], (pelvis + thorax) / 2)
    np.testing.assert_allclose(out[:, h["Neck/Nose"]], kp[:, c["Nose"]])
    for side in ("L", "R"):
        for hn, cn in (("Hip", "Hip"), ("Knee", "Knee"), ("Foot", "Ankle"),
                       ("Shoulder", "Shoulder"), ("Elbow", "Elbow"), ("Wrist", "Wrist")):
            np.testing.assert_array_equal(out[:, h[side + hn]], kp[:, c[side + cn]])
            np.testing.assert_array_equal(conf[:, h[side + hn]], sc[:, c[side + cn]])
    np.testing.assert_allclose(conf[:, h["Hip"]], np.minimum(sc[:, c["LHip"]], sc[:, c["RHip"]]))
    # head: from the more confident of ears / eyes, extended away from the thorax
    ears = (kp[:, c["LEar"]] + kp[:, c["REar"]]) / 2
    eyes = (kp[:, c["LEye"]] + kp[:, c["REye"]]) / 2
    use_eyes = (np.minimum(sc[:, c["LEye"]], sc[:, c["REye"]])
                > np.minimum(sc[:, c["LEar"]], sc[:, c["REar"]]))
    centre = np.where(use_eyes[:, None], eyes, ears)
    np.testing.assert_allclose(out[:, h["Head"]], centre + 0.5 * (centre - thorax))


def test_upright_person_head_above_thorax_and_flip_consistent():
    # an upright person in pixels (y down): head must come out above (smaller y) the nose
    kp = np.zeros((17, 2))
    kp[0] = (320, 100)                     # nose
    kp[1], kp[2] = (330, 90), (310, 90)    # eyes
    kp[3], kp[4] = (340, 95), (300, 95)    # ears
    kp[5], kp[6] = (360, 160), (280, 160)  # shoulders
    kp[11], kp[12] = (350, 300), (290, 300)
    out, _ = adapters.coco17_to_h36m17(kp)
    assert out[10, 1] < out[9, 1] < out[8, 1] < out[7, 1] < out[0, 1]


@pytest.mark.parametrize("fmt,table", [("openpose18", adapters._OPENPOSE18_TO_COCO),
                                       ("body25", adapters._BODY25_TO_COCO),
                                       ("blazepose33", adapters._BLAZEPOSE_TO_COCO)])
def test_layouts_reorder_to_coco(fmt, table):
    rng = np.random.default_rng(1)
    n = adapters.FORMATS[fmt]
    kp = rng.uniform(0, 100, size=(3, n, 2))
    sc = rng.uniform(0, 1, size=(3, n))
    coco, csc = adapters.to_coco17(kp, sc, fmt)
    assert coco.shape == (3, 17, 2)
    np.testing.assert_array_equal(coco, kp[:, list(table)])
    np.testing.assert_array_equal(csc, sc[:, list(table)])
    assert len(set(table)) == 17


@pytest.mark.parametrize("fmt", ["halpe26", "halpe136", "wholebody133"])
def test_coco_first_layouts(fmt):
    """Halpe and COCO-WholeBody start with COCO's 17 body points; Halpe's head top is the head."""
    rng = np.random.default_rng()
    n = adapters.FORMATS[fmt]
    kp = rng.uniform(0, 640, size=(4, n, 2))
    sc = rng.uniform(0.2, 1, size=(4, n))
    coco, csc = adapters.to_coco17(kp, sc, fmt)
    np.testing.assert_array_equal(coco, kp[:, :17])
    np.testing.assert_array_equal(csc, sc[:, :17])
    out, conf = adapters.to_h36m17(kp, sc, fmt=fmt, width=640, height=480)
    want, wconf = adapters.coco17_to_h36m17(kp[:, :17], sc[:, :17])
    head = H36M.index("Head")
    if fmt.startswith("halpe"):
        want[:, head], wconf[:, head] = kp[:, 17], sc[:, 17]
        assert not np.allclose(want[:, head], adapters.coco17_to_h36m17(kp[:, :17])[0][:, head])
    np.testing.assert_allclose(out, normalize_screen_coordinates(want, 640, 480), atol=1e-5)
    np.testing.assert_allclose(conf, wconf, atol=1e-7)
    with pytest.raises(ValueError, match=rf"\(\.\.\., {n}, 2\)"):
        adapters.to_h36m17(kp[:, :-1], None, fmt=fmt, width=640, height=480)


def test_known_names_of_source_layouts():
    # spot checks against the published layouts
    assert adapters._OPENPOSE18_TO_COCO[COCO.index("LShoulder")] == 5   # OpenPose LShoulder
    assert adapters._OPENPOSE18_TO_COCO[COCO.index("RHip")] == 8
    assert adapters._BODY25_TO_COCO[COCO.index("RHip")] == 9            # BODY_25 RHip
    assert adapters._BLAZEPOSE_TO_COCO[COCO.index("LHip")] == 23        # left_hip
    assert adapters._BLAZEPOSE_TO_COCO[COCO.index("RAnkle")] == 28      # right_ankle


def test_to_h36m17_normalises_pixels_and_units():
    rng = np.random.default_rng(2)
    kp, sc = _coco(rng, (4,))
    out, conf = adapters.to_h36m17(kp, sc, fmt="coco17", width=640, height=480)
    assert out.dtype == np.float32 and out.shape == (4, 17, 2) and conf.shape == (4, 17)
    want = normalize_screen_coordinates(adapters.coco17_to_h36m17(kp, sc)[0], 640, 480)
    np.testing.assert_allclose(out, want, rtol=1e-6, atol=1e-6)
    # MediaPipe units: fractions of width / height
    bp = rng.uniform(0, 1, size=(2, 33, 2))
    a, _ = adapters.to_h36m17(bp, None, fmt="blazepose33", width=640, height=480, units="unit")
    b, _ = adapters.to_h36m17(bp * [640, 480], None, fmt="blazepose33", width=640, height=480)
    np.testing.assert_allclose(a, b, atol=1e-6)
    # h36m17 passes through (normalised only)
    h, s = adapters.to_h36m17(kp, None, fmt="h36m17", width=640, height=480)
    np.testing.assert_allclose(h, normalize_screen_coordinates(kp, 640, 480), atol=1e-6)
    assert (s == 1).all()


def test_nan_propagates_to_derived_joints_only():
    kp = np.random.default_rng(3).uniform(0, 100, size=(17, 2))
    kp[11] = np.nan  # left hip missing
    out, _ = adapters.coco17_to_h36m17(kp)
    bad = set(np.flatnonzero(np.isnan(out).any(-1)))
    assert bad == {0, 4, 7}  # pelvis, LHip, spine


def test_bad_input_raises():
    with pytest.raises(ValueError, match=r"\(\.\.\., 17, 2\)"):
        adapters.coco17_to_h36m17(np.zeros((18, 2)))
    with pytest.raises(ValueError, match="scores"):
        adapters.coco17_to_h36m17(np.zeros((17, 2)), np.zeros(16))
    with pytest.raises(ValueError, match="format"):
        adapters.to_h36m17(np.zeros((17, 2)), fmt="alphapose", width=1, height=1)
    with pytest.raises(ValueError, match="positive"):
        adapters.to_h36m17(np.zeros((17, 2)), fmt="coco17", width=0, height=1)

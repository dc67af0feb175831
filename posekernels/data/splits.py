"""Standard subject splits, action lists and image sizes of the public 3D pose benchmarks.

Subject and action names follow the VideoPose3D npz files (``data_3d_h36m.npz``,
``data_3d_humaneva15.npz``) and the P-STMO MPI-INF-3DHP npz files. Action keys in those files
carry suffixes ("Walking 1", "Walk 1 chunk0"); :func:`canonical_action` maps a key to the action
it belongs to, which is how results are grouped per action.
"""
from __future__ import annotations

# --- Human3.6M -----------------------------------------------------------------------------
H36M_TRAIN_SUBJECTS = ("S1", "S5", "S6", "S7", "S8")
H36M_TEST_SUBJECTS = ("S9", "S11")
H36M_SUBJECTS = H36M_TRAIN_SUBJECTS + H36M_TEST_SUBJECTS
H36M_ACTIONS = (
    "Directions", "Discussion", "Eating", "Greeting", "Phoning", "Photo", "Posing", "Purchases",
    "Sitting", "SittingDown", "Smoking", "Waiting", "WalkDog", "Walking", "WalkTogether",
)
#: Subject S1 names two actions differently in the original release.
H36M_ACTION_ALIASES = {"TakingPhoto": "Photo", "WalkingDog": "WalkDog"}
H36M_FPS = 50.0
#: Image size of the four Human3.6M video cameras (width, height).
H36M_IMAGE_SIZE = (1000, 1002)
#: The VideoPose3D 32-joint -> 17-joint reduction: the 32 mocap joints kept, in order, to form
#: Hip, RHip, RKnee, RFoot, LHip, LKnee, LFoot, Spine, Thorax, Neck/Nose, Head, LShoulder, LElbow,
#: LWrist, RShoulder, RElbow, RWrist. The 15 dropped joints (4, 5, 9, 10, 11, 16, 20-24, 28-31)
#: are toe/end sites, hand/thumb joints and duplicates of kept positions.
H36M_32_TO_17 = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)

# --- HumanEva-I ----------------------------------------------------------------------------
HUMANEVA_TRAIN_SUBJECTS = ("Train/S1", "Train/S2", "Train/S3")
HUMANEVA_TEST_SUBJECTS = ("Validate/S1", "Validate/S2", "Validate/S3")
HUMANEVA_ACTIONS = ("Box", "Gestures", "Jog", "ThrowCatch", "Walk")
#: The actions results are reported on (VideoPose3D, GLA-GCN).
HUMANEVA_EVAL_ACTIONS = ("Walk", "Jog", "Box")
HUMANEVA_CAMERAS = ("C1", "C2", "C3")
HUMANEVA_FPS = 60.0
HUMANEVA_IMAGE_SIZE = (640, 480)

# --- MPI-INF-3DHP (P-STMO npz) -------------------------------------------------------------
MPI3DHP_TRAIN_SUBJECTS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8")
MPI3DHP_TRAIN_SEQUENCES = ("Seq1", "Seq2")
MPI3DHP_TRAIN_CAMERAS = ("0", "1", "2", "4", "5", "6", "7", "8")
MPI3DHP_TEST_SEQUENCES = ("TS1", "TS2", "TS3", "TS4", "TS5", "TS6")
#: Image sizes (width, height): training cameras and test TS1-TS4 are 2048 x 2048; TS5, TS6 are
#: outdoor sequences filmed at 1920 x 1080.
MPI3DHP_TRAIN_IMAGE_SIZE = (2048, 2048)
MPI3DHP_TEST_IMAGE_SIZE = {"TS1": (2048, 2048), "TS2": (2048, 2048), "TS3": (2048, 2048),
                           "TS4": (2048, 2048), "TS5": (1920, 1080), "TS6": (1920, 1080)}
#: Frame rates of the test sequences (TS1-TS4 studio, TS5-TS6 outdoor).
MPI3DHP_TEST_FPS = {"TS1": 25.0, "TS2": 25.0, "TS3": 25.0, "TS4": 25.0, "TS5": 50.0, "TS6": 50.0}


def canonical_action(name: str) -> str:
    """The action a sequence key belongs to: its first word, with Human3.6M's S1 aliases mapped.

    ``"Walking 1" -> "Walking"``, ``"Walk 1 chunk0" -> "Walk"``, ``"TakingPhoto 1" -> "Photo"``.
    Keys without a space (CMU clip names such as ``"01_01"``) are returned unchanged.
    """
    base = str(name).split(" ")[0]
    return H36M_ACTION_ALIASES.get(base, base)

"""``posekernels evaluate``: MPJPE, P-MPJPE, N-MPJPE, MPJVE, PCK and AUC of a checkpoint.

    posekernels evaluate --bvh PATH... [--checkpoint PATH|default] [--json]
    posekernels evaluate --data-3d data_3d_cmu.npz --subjects 09 [--checkpoint PATH] [--json]
        [--cameras rig|random] [--num-cameras N] [--camera-seed S] [--detector-noise]
        [--camera-distribution JSON] [--weights auto|average|last] [--keypoints h36m17|coco17]

BVH files (or folders) are imported with the CMU conventions (50 Hz), world 3D sequences are
projected through the default virtual rig (4 cameras; ``--cameras rig``, the default) or through
N static cameras per clip drawn from the documented evaluation distribution
(``--cameras random``; :mod:`posekernels.data.random_cameras`, seed ``--camera-seed``, default
20261130, which no training run uses; ``--camera-distribution`` changes its ranges, e.g. to
one's own camera's image size, field of view, height and distance), every sequence is lifted
(test-time flip unless ``--no-flip``) and compared with its root-relative camera-frame 3D.
``--checkpoint default`` takes the shipped centred lifter (``--mode causal`` the causal one);
a training run's last.pt is read as its weight average, if it keeps one, unless ``--weights
last``. Errors are in mm
(MPJVE in mm per frame), frame-weighted within an action (a BVH clip is an action), averaged
over actions; also per subject. The terminal gets a table; ``--json`` prints one JSON object
whose top-level ``mpjpe``, ``p_mpjpe``, ``n_mpjpe``, ``mpjve``, ``pck``, ``auc`` (means over
actions) and ``frames`` are followed by ``per_action``, ``per_subject``, ``all_frames`` and
``per_joint_mpjpe`` (mm per joint name, frame-weighted within an action, averaged over actions).
``--keypoints coco17`` (with ``--bvh``) feeds the lifter what a live pipeline feeds it: COCO-17
points (nominal face points moved with the head; :mod:`posekernels.data.detector_joints`), the
detector noise on those, then :mod:`posekernels.adapters`' h36m17 rules.
"""
from __future__ import annotations

import json
import sys

from ._args import add_weights_arg


def register(sub) -> None:
    from posekernels.data.detector_joints import KEYPOINT_STYLES

    p = sub.add_parser(
        "evaluate", help="evaluate a checkpoint on BVH files or a 3D npz (MPJPE, P-MPJPE, ...)",
        description="Lift 2D projections (default virtual rig) of BVH motion capture or of a "
                    "VideoPose3D 3D npz with a checkpoint and report MPJPE, P-MPJPE, N-MPJPE, "
                    "MPJVE (mm), PCK@150mm and AUC per action and per subject.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bvh", nargs="+", metavar="PATH", help="BVH files or folders")
    src.add_argument("--data-3d", dest="data_3d", metavar="NPZ",
                     help="VideoPose3D 3D npz (world positions, metres)")
    p.add_argument("--subjects", nargs="+", help="subjects of --data-3d to evaluate (default all)")
    p.add_argument("--checkpoint", default="default",
                   help="a posekernels checkpoint, or 'default' for the shipped model")
    p.add_argument("--no-flip", dest="flip", action="store_false", help="no test-time flip")
    p.add_argument("--detector-noise", action="store_true",
                   help="add detector-like 2D noise (seeded) before lifting")
    p.add_argument("--cameras", choices=("rig", "random"), default="rig",
                   help="the default 4-camera rig, or random cameras per clip (default rig)")
    p.add_argument("--num-cameras", type=int, default=4,
                   help="--cameras random: cameras per clip (default 4)")
    p.add_argument("--camera-seed", type=int, default=None,
                   help="--cameras random: seed of the evaluation cameras (default 20261130)")
    p.add_argument("--camera-distribution", metavar="JSON",
                   help="--cameras random: a JSON file (or an inline JSON object) of camera "
                        "ranges changed from the evaluation distribution, e.g. one's own camera: "
                        "'{\"image_sizes\": [[1920, 1080]], \"hfov_deg\": [69, 69], "
                        "\"height\": [2.2, 2.2], \"distance\": [3.5, 3.5]}' (keys: those of "
                        "posekernels.data.random_cameras.CameraDistribution)")
    p.add_argument("--fps", type=float, default=50.0,
                   help="--bvh: frame rate the motion is resampled to, i.e. the camera's "
                        "(default 50, the shipped lifters' training rate); the model's windows "
                        "sample it at the model's own rate (model.frame_rate) as "
                        "lift_sequence(fps=...) and stream --fps do")
    p.add_argument("--native-rate", action="store_true",
                   help="--bvh --fps: feed the frames as they are (windows of T camera frames "
                        "whatever the rate), to measure what a frame-rate mismatch costs")
    p.add_argument("--keypoints", choices=KEYPOINT_STYLES, default="h36m17",
                   help="--bvh: the 2D input: the mocap joints projected (h36m17, the default), "
                        "or COCO-17 points made into h36m17 by posekernels.adapters, as a live "
                        "pipeline with a COCO detector gives them (coco17)")
    p.add_argument("--smooth", action="store_true",
                   help="One Euro smoothing of the poses (the defaults of stream --smooth)")
    p.add_argument("--mode", choices=("centered", "causal"), default="centered",
                   help="which shipped model --checkpoint default takes (default centered)")
    p.add_argument("--precision", choices=("float32", "bf16"), default="float32",
                   help="bf16: bfloat16 weight products on the CPU (faster with AVX-512 BF16; "
                        "measures what that costs in accuracy)")
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--device", default="cpu")
    p.add_argument("--by", choices=("action", "subject"), default="action",
                   help="rows of the terminal table (default action)")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    add_weights_arg(p)
    p.set_defaults(func=run)


def _finite(obj):
    """NaN (a metric with no frames, e.g. MPJVE of one-frame clips) becomes null in JSON."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def _camera_distribution(args):
    """The evaluation distribution with ``--camera-distribution``'s changes (None without it)."""
    from posekernels.data.random_cameras import EVALUATION_CAMERAS, camera_distribution_from_dict

    from ._args import read_json_object

    text = getattr(args, "camera_distribution", None)
    if text is None:
        return None
    if args.cameras != "random":
        raise ValueError("--camera-distribution needs --cameras random")
    d, where = read_json_object(text, "--camera-distribution")
    return camera_distribution_from_dict(d, where, base=EVALUATION_CAMERAS)


def _per_joint(summary, model) -> dict | None:
    """MPJPE per joint (mm), keyed by the model skeleton's joint names (indices without one)."""
    values = summary.get("per_joint_mpjpe")
    if values is None:
        return None
    names = getattr(getattr(model, "skeleton", None), "joint_names", None)
    if names is None or len(names) != len(values):
        names = [str(i) for i in range(len(values))]
    return dict(zip(names, values))


def _camera_set(args, sequences, dist=None) -> dict:
    """The camera set of a run, for the JSON output (every camera of every clip for random)."""
    from posekernels.data.random_cameras import EVALUATION_CAMERAS, EVALUATION_SEED

    if args.cameras == "rig":
        return {"kind": "rig"}
    seed = EVALUATION_SEED if args.camera_seed is None else args.camera_seed
    per_clip = {}
    for s in sequences:
        cam = s.extra.get("camera")
        if cam is not None:
            per_clip.setdefault(f"{s.subject}/{s.action}", []).append(cam)
    return {"kind": "random", "num_cameras": args.num_cameras, "seed": seed,
            "distribution": (dist or EVALUATION_CAMERAS).to_dict(), "per_clip": per_clip}


def _window_rate(args, model) -> float | None:
    """The fps the lifter's windows are resampled from: the BVH's --fps when it differs from the
    model's recorded rate (None: frames as they are)."""
    if not args.bvh or getattr(args, "native_rate", False):
        return None
    rate = getattr(model, "frame_rate", None)
    if rate is None:
        print(f"posekernels evaluate: note: the checkpoint does not record the frame rate it was "
              f"trained at; the {args.fps:g} fps frames are lifted as they are", file=sys.stderr)
        return None
    return None if float(args.fps) == float(rate) else float(args.fps)


def run(args) -> int:
    from posekernels.checkpoints import DefaultModelUnavailable, load_model
    from posekernels.evaluation import (evaluate_sequences, headline, sequences_from_3d,
                                        sequences_from_bvh)
    from posekernels.inference import model_joints
    from posekernels.metrics import format_table

    try:
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
        if not 1 <= args.num_cameras <= 1000:
            raise ValueError(f"--num-cameras must lie in [1, 1000], got {args.num_cameras}")
        dist = _camera_distribution(args)
        cams = dict(cameras=args.cameras, num_cameras=args.num_cameras,
                    camera_seed=args.camera_seed, camera_distribution=dist)
        model = load_model(args.checkpoint, device=args.device, mode=args.mode,
                           weights=getattr(args, "weights", "auto"))
        keypoints = getattr(args, "keypoints", "h36m17")
        if keypoints != "h36m17" and not args.bvh:
            raise ValueError("--keypoints coco17 needs --bvh (a 3D npz has no face points)")
        if args.bvh:
            sequences = sequences_from_bvh(args.bvh, detector_noise=args.detector_noise,
                                           fps=args.fps, keypoints=keypoints, **cams)
        else:
            sequences = sequences_from_3d(args.data_3d, subjects=args.subjects,
                                          detector_noise=args.detector_noise, **cams)
        joints = {s.positions_2d.shape[1] for s in sequences}
        if joints != {model_joints(model)}:
            raise ValueError(f"the data has {sorted(joints)} joints but the model "
                             f"({args.checkpoint}) expects {model_joints(model)}")
        rate = _window_rate(args, model)
        summary = evaluate_sequences(model, sequences, flip_tta=args.flip,
                                     batch_size=args.batch_size, fps=rate,
                                     smoothing=bool(getattr(args, "smooth", False)) or None,
                                     precision=getattr(args, "precision", "float32")
                                     ).summary()
    except (ValueError, DefaultModelUnavailable) as exc:
        print(f"posekernels evaluate: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        out = headline(summary)
        out.update(units=summary["units"], test_flip=bool(args.flip),
                   checkpoint=args.checkpoint,
                   weights=getattr(model, "checkpoint_info", {}).get("weights"),
                   detector_noise=bool(args.detector_noise),
                   keypoints=keypoints,
                   cameras=_camera_set(args, sequences, dist),
                   fps=args.fps if args.bvh else None, windows_resampled_from_fps=rate,
                   model_frame_rate=getattr(model, "frame_rate", None),
                   smoothing=bool(getattr(args, "smooth", False)),
                   precision=getattr(args, "precision", "float32"),
                   per_action=summary["per_action"],
                   per_subject=summary["per_subject"], all_frames=summary["all_frames"],
                   per_joint_mpjpe=_per_joint(summary, model))
        print(json.dumps(_finite(out), indent=1))
    else:
        print(format_table(summary, by=args.by))
    return 0

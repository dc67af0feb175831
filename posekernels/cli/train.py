"""``posekernels train``: train GLA-GCN, the released single-frame model or the global-node GCN.

    posekernels train --config run.json [flags that override it]
    posekernels train --config default:centered --init-from default:centered \\
        --camera-distribution mycam.json --epochs 2 --lr 3e-4 --data-3d out/cmu/data_3d_cmu.npz \\
        --out-dir out/mycam     # the shipped lifter tuned to one's own camera
    posekernels train --data-3d out/cmu/data_3d_cmu.npz --val-subjects 09 \\
        --arch glagcn --receptive-field 27 --channels 32 --epochs 8 --out-dir out/run
    torchrun --nproc_per_node 2 -m posekernels train --config run.json   # DDP

The config file is JSON with the fields of :class:`posekernels.training.TrainConfig`
(``default:centered`` / ``default:causal``: the shipped lifter's own recipe,
:func:`posekernels.checkpoints.default_training_config`); flags override it. Writes
``<out-dir>/last.pt`` after every epoch (``--resume auto`` continues from it),
``<out-dir>/model.pt`` at the end and ``<out-dir>/history.json``.
"""
from __future__ import annotations

import json
import sys


def register(sub) -> None:
    p = sub.add_parser(
        "train", help="train a lifting model (GLA-GCN, released S_AGCN, global-node GCN)",
        description="Train a lifting model on world 3D sequences projected through the default "
                    "virtual rig. Settings come from --config (JSON, TrainConfig fields) and the "
                    "flags below, which override it.")
    p.add_argument("--config",
                   help="JSON config file (fields of TrainConfig), or default:centered / "
                        "default:causal for the recipe the shipped lifter was trained with")
    p.add_argument("--camera-distribution", metavar="JSON",
                   help="camera ranges changed from the training distribution (a JSON file or "
                        "an inline object, keys of CameraDistribution), e.g. one's own camera "
                        "to tune a lifter to it; needs cameras 'random'")
    p.add_argument("--data-3d", dest="data_3d", help="VideoPose3D 3D npz (world, metres)")
    p.add_argument("--train-subjects", nargs="+", help="training subjects (default: all others)")
    p.add_argument("--val-subjects", nargs="+", help="validation subjects")
    p.add_argument("--arch", choices=("glagcn", "released_sagcn", "global_node"),
                   help="model architecture (replaces the config's model)")
    p.add_argument("--receptive-field", type=int, help="GLA-GCN window T (3**k)")
    p.add_argument("--channels", type=int, help="channels C")
    p.add_argument("--model-args", help='extra model arguments as JSON, e.g. \'{"head": "fc"}\'')
    p.add_argument("--epochs", type=int)
    p.add_argument("--stage1-epochs", type=int, help="GLA-GCN stage-1 epochs (default half)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=("ranger", "adam"))
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-min", type=float)
    p.add_argument("--lr-schedule", choices=("cosine", "exp"))
    p.add_argument("--lr-decay", type=float)
    p.add_argument("--frame-stride", type=int, help="use every s-th frame as a sample")
    p.add_argument("--detector-noise", action="store_true", default=None,
                   help="add detector-like noise to the 2D inputs")
    p.add_argument("--no-flip", dest="flip_augment", action="store_false", default=None,
                   help="no flip augmentation")
    p.add_argument("--no-test-flip", dest="test_flip", action="store_false", default=None,
                   help="no test-time flip in validation")
    p.add_argument("--no-bn-decay", dest="bn_momentum_decay", action="store_false", default=None)
    p.add_argument("--no-amp", dest="amp", action="store_false", default=None,
                   help="no bf16 autocast on CUDA")
    p.add_argument("--seed", type=int)
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, help="CPU threads (torch.set_num_threads)")
    p.add_argument("--out-dir", dest="out_dir")
    p.add_argument("--val-every", type=int)
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="CHECKPOINT",
                   help="continue from a last.pt (default <out-dir>/last.pt)")
    p.add_argument("--init-from", dest="init_from", metavar="CHECKPOINT",
                   help="start from this checkpoint's weights (fine-tuning); 'default:causal' or "
                        "'default:centered' for a shipped lifter")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.set_defaults(func=run)


_PLAIN = ("data_3d", "train_subjects", "val_subjects", "epochs", "stage1_epochs", "batch_size",
          "optimizer", "lr", "lr_min", "lr_schedule", "lr_decay", "frame_stride",
          "detector_noise", "flip_augment", "test_flip", "bn_momentum_decay", "amp", "seed",
          "device", "threads", "out_dir", "val_every", "progress", "init_from")


def config_from_args(args):
    """The TrainConfig of a parsed command line (config file, then flag overrides)."""
    from posekernels.training import TrainConfig, config_from_dict, load_config

    if args.config and args.config.startswith("default:"):
        from posekernels.checkpoints import default_training_config

        mode = args.config.partition(":")[2]
        try:
            recipe = default_training_config(mode)
        except ValueError as exc:
            raise ValueError(f"--config {args.config}: {exc}") from None
        cfg = config_from_dict(recipe, f"--config {args.config}")
    else:
        cfg = load_config(args.config) if args.config else TrainConfig()
    overrides = {k: getattr(args, k) for k in _PLAIN if getattr(args, k) is not None}
    if args.camera_distribution is not None:
        from ._args import read_json_object

        overrides["camera_distribution"], _ = read_json_object(args.camera_distribution,
                                                               "--camera-distribution")
    model = dict(cfg.model)
    if args.arch is not None:
        model = {"arch": args.arch}
        if args.arch == "global_node":
            model["skeleton"] = "h36m17"
    if args.receptive_field is not None:
        model["receptive_field"] = args.receptive_field
    if args.channels is not None:
        model["channels"] = args.channels
    if args.model_args:
        try:
            extra = json.loads(args.model_args)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--model-args: malformed JSON ({exc.msg})") from None
        if not isinstance(extra, dict):
            raise ValueError("--model-args must be a JSON object")
        model.update(extra)
    if model != cfg.model:
        overrides["model"] = model
    return config_from_dict(overrides, "command line", base=cfg)


def run(args) -> int:
    from posekernels.training import train

    try:
        cfg = config_from_args(args)
        result = train(cfg, resume=args.resume)
    except (ValueError, FloatingPointError) as exc:
        print(f"posekernels train: error: {exc}", file=sys.stderr)
        return 1
    if result["model_path"] and result["rank"] == 0:
        print(f"wrote {result['model_path']}")
    return 0

"""Training configuration: one dataclass, read from JSON and overridden by command-line flags.

A config file is a JSON object whose keys are the fields of :class:`TrainConfig` (unknown keys
and wrong types are errors that name the file and the key). Example::

    {
      "model": {"arch": "glagcn", "receptive_field": 27, "channels": 32},
      "data_3d": "out/cmu/data_3d_cmu.npz",
      "val_subjects": ["09"],
      "epochs": 8,
      "batch_size": 256
    }

``model`` is a dict: ``arch`` is ``"glagcn"`` (keyword arguments of
:class:`posekernels.models.GLAGCN`), ``"released_sagcn"`` (arguments of
:func:`posekernels.models.released_sagcn`) or ``"global_node"``
(:class:`posekernels.models.GlobalNodeGCN`); every other entry is passed to the constructor.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainConfig", "load_config", "config_from_dict", "ConfigError", "MODEL_ARCHS"]

MODEL_ARCHS = ("glagcn", "released_sagcn", "global_node")


class ConfigError(ValueError):
    """A configuration problem (the message names the file or flag and the key)."""


@dataclass
class TrainConfig:
    """Everything a training run needs; see the field comments for units and defaults."""

    # model: {"arch": ..., constructor kwargs...}
    model: dict = field(default_factory=lambda: {"arch": "glagcn", "receptive_field": 27,
                                                  "channels": 32})
    # data: a VideoPose3D 3D npz of world positions (metres), projected through the default
    # virtual rig (posekernels.data.default_rig) into 2D inputs and camera-frame targets
    data_3d: str | None = None
    train_subjects: list | None = None      # None: every subject not in val_subjects
    val_subjects: list = field(default_factory=list)
    detector_noise: bool = False            # rig cameras: posekernels.data.DetectorNoise on the 2D
                                            # input (training and validation); random cameras: on
                                            # the validation input only (training uses augment_2d)
    # cameras: "rig" projects through the default virtual rig (fixed, precomputed); "random"
    # draws a fresh camera per training sample per step (posekernels.data.random_cameras, the
    # ranges of CameraDistribution, changed by camera_distribution) on the training device
    cameras: str = "rig"
    camera_distribution: dict | None = None
    augment_2d: bool = False                # random cameras: detector-like noise, outliers, swaps
                                            # and missing joints (training/camera_data.Augment2D)
    augment_2d_config: dict | None = None   # fields of Augment2D to change
    scale_jitter: float = 0.0               # random cameras: subject scaled by 1 +- this
    bone_jitter: float = 0.0                # random cameras: each bone (mirror pairs alike)
                                            # scaled by 1 +- this: other body proportions
    bone_rotation: float = 0.0              # random cameras: each bone turned by up to this
                                            # many degrees (random axis, per window, left and
                                            # right independently): poses the data lacks
    limb_swing: list | None = None          # random cameras: [low, high] factor on each limb
                                            # bone's swing about its window-mean direction (per
                                            # window, mirror pairs alike): strides and arm swings
                                            # of other amplitudes
    speed_range: list | None = None         # random cameras: [low, high] playback speed per
                                            # window, log-uniform (data rate / camera rate:
                                            # [0.8, 2] covers 25-62 fps cameras on 50 Hz data)
    track_start: float = 0.0                # random cameras: probability that a window holds a
                                            # track's first frames (centred: also, independently,
                                            # its last), the rest padded as lift_sequence and a
                                            # new stream pad them (RandomCameraWindows.track_ends)
    detector_joints: float = 0.0            # random cameras: probability that a window's 2D
                                            # input is made as a COCO detector and
                                            # posekernels.adapters make it (nose for neck/nose,
                                            # shoulders' midpoint for thorax, ...; targets stay
                                            # the mocap joints): data.detector_joints
    detector_joints_config: dict | None = None  # fields of DetectorJoints to change (not prob)
    sample_balance: float = 0.0             # 0: an epoch is one pass over the training frames
                                            # in random order; b in (0, 1]: as many frames drawn
                                            # with replacement, a sequence of L frames weighing
                                            # L ** (1 - b) in all (1: every sequence alike), so
                                            # that long clips do not drown short ones
    motion_weight: float = 0.0              # random cameras: g > 0 draws each epoch's frames
                                            # with replacement, a frame's weight (after
                                            # sample_balance) times (its joints' speed / the
                                            # mean) ** g: fast motion drawn more often
    val_cameras: str = "rig"                # validation cameras: "rig" or "random"
    val_num_cameras: int = 4                # "random": cameras per validation clip
    camera_seed: int = 20261130             # "random" validation cameras (evaluation seed)
    frame_stride: int = 1                   # every s-th frame is a training sample (per-camera offset)
    frame_rate: float = 50.0                # frames/s of the training motion (Human3.6M and
    #                                         import-bvh: 50); checkpoints record it
    init_from: str | None = None            # start from this checkpoint's weights (fine-tuning;
    #                                         "default:causal" / "default:centered" are the
    #                                         shipped lifters; posekernels.checkpoints.init_weights);
    #                                         a resumed run takes its last.pt instead
    # schedule
    epochs: int = 10
    stage1_epochs: int | None = None        # GLA-GCN stage 1 (L_global + L_local); None: epochs // 2
    batch_size: int = 256                   # global batch (split over DDP ranks)
    optimizer: str = "ranger"               # "ranger" (RAdam + Lookahead) or "adam"
    lr: float = 0.01
    lr_min: float = 1e-5                    # cosine schedule floor
    lr_schedule: str = "cosine"             # "cosine" (to lr_min over the epochs) or "exp"
    lr_decay: float = 0.96                  # per-epoch factor of the "exp" schedule
    weight_decay: float = 0.0
    bn_momentum_decay: bool = True          # BatchNorm momentum 0.1 -> 0.001 over training
    flip_augment: bool = True               # random horizontal flip of each training sample
    target_jitter: bool = False             # the released code's 3D-target jitter: x-y rotated by
    #                                         -5/0/+5 degrees and scaled by 0.95/1/1.05 per sample
    test_flip: bool = True                  # test-time flip in validation
    grad_clip: float | None = None
    ema_decay: float = 0.0                  # 0: off; d in (0, 1): keep an exponential moving
                                            # average of the weights and BatchNorm statistics
                                            # (w_ema <- d w_ema + (1 - d) w after every step),
                                            # validated and saved as model.pt in place of the
                                            # last weights (last.pt keeps both)
    # running
    seed: int = 0
    device: str = "auto"                    # "auto", "cpu", "cuda", "cuda:1", ...
    amp: bool = True                        # bf16 autocast on CUDA
    amp_cpu: bool = False                   # bf16 autocast on the CPU too (needs amp)
    threads: int | None = None              # torch.set_num_threads on CPU
    tune_allocator: bool = True             # CPU: posekernels.tune_cpu_allocator() (glibc keeps
    #                                         freed activations for reuse instead of unmapping
    #                                         them: no page faults on every step; process-wide)
    out_dir: str = "out/train"
    val_every: int = 1                      # validate every n epochs (0: only after the last)
    checkpoint_minutes: float = 10.0        # also write last.pt inside an epoch at least this
                                            # often (0: only after every epoch); single process
    val_batch_size: int = 1024
    progress: bool = True                   # tqdm progress bars

    def validate(self, where: str = "config") -> "TrainConfig":
        def bad(key, msg):
            raise ConfigError(f"{where}: {key}: {msg}")

        if not isinstance(self.model, dict) or "arch" not in self.model:
            bad("model", "must be an object with an 'arch' entry")
        if self.model["arch"] not in MODEL_ARCHS:
            bad("model.arch", f"must be one of {list(MODEL_ARCHS)}, got {self.model['arch']!r}")
        for key in ("epochs", "batch_size", "frame_stride", "val_batch_size"):
            if getattr(self, key) < 1:
                bad(key, f"must be >= 1, got {getattr(self, key)}")
        if self.stage1_epochs is not None and not 0 <= self.stage1_epochs <= self.epochs:
            bad("stage1_epochs", f"must lie in [0, epochs={self.epochs}], got "
                f"{self.stage1_epochs}")
        if self.optimizer not in ("ranger", "adam"):
            bad("optimizer", f"must be 'ranger' or 'adam', got {self.optimizer!r}")
        if self.lr_schedule not in ("cosine", "exp"):
            bad("lr_schedule", f"must be 'cosine' or 'exp', got {self.lr_schedule!r}")
        if not self.lr > 0 or not 0 <= self.lr_min <= self.lr:
            bad("lr", f"need lr > 0 and 0 <= lr_min <= lr, got lr={self.lr}, "
                f"lr_min={self.lr_min}")
        if not 0 < self.lr_decay <= 1:
            bad("lr_decay", f"must lie in (0, 1], got {self.lr_decay}")
        if self.cameras not in ("rig", "random"):
            bad("cameras", f"must be 'rig' or 'random', got {self.cameras!r}")
        if self.val_cameras not in ("rig", "random"):
            bad("val_cameras", f"must be 'rig' or 'random', got {self.val_cameras!r}")
        if self.val_num_cameras < 1:
            bad("val_num_cameras", f"must be >= 1, got {self.val_num_cameras}")
        if not 1 <= self.frame_rate <= 1000:
            bad("frame_rate", f"must be a frame rate in [1, 1000], got {self.frame_rate}")
        if not 0 <= self.scale_jitter < 1:
            bad("scale_jitter", f"must lie in [0, 1), got {self.scale_jitter}")
        if not 0 <= self.bone_jitter < 0.5:
            bad("bone_jitter", f"must lie in [0, 0.5), got {self.bone_jitter}")
        if not 0 <= self.ema_decay < 1:
            bad("ema_decay", f"must lie in [0, 1), got {self.ema_decay}")
        if not 0 <= self.bone_rotation <= 45:
            bad("bone_rotation", f"must lie in [0, 45] degrees, got {self.bone_rotation}")
        if not 0 <= self.track_start <= 1:
            bad("track_start", f"must be a probability in [0, 1], got {self.track_start}")
        if not 0 <= self.detector_joints <= 1:
            bad("detector_joints", f"must be a probability in [0, 1], got {self.detector_joints}")
        if self.detector_joints_config is not None and "prob" in self.detector_joints_config:
            bad("detector_joints_config", "sets 'prob' through detector_joints, not here")
        if not 0 <= self.sample_balance <= 1:
            bad("sample_balance", f"must lie in [0, 1], got {self.sample_balance}")
        if not 0 <= self.motion_weight <= 4:
            bad("motion_weight", f"must lie in [0, 4], got {self.motion_weight}")
        if self.cameras == "rig" and (self.augment_2d or self.scale_jitter or self.bone_jitter
                                      or self.bone_rotation or self.limb_swing
                                      or self.speed_range or self.camera_distribution
                                      or self.track_start or self.detector_joints
                                      or self.motion_weight):
            bad("cameras", "augment_2d, scale_jitter, bone_jitter, bone_rotation, limb_swing, "
                "speed_range, track_start, detector_joints, motion_weight and "
                "camera_distribution need cameras='random'")
        from ..data.random_cameras import camera_distribution_from_dict
        from ..data.detector_joints import detector_joints_from_dict
        from .camera_data import augment_2d_from_dict, check_limb_swing, check_speed_range
        try:
            check_speed_range(self.speed_range, f"{where}: speed_range")
            check_limb_swing(self.limb_swing, f"{where}: limb_swing")
            camera_distribution_from_dict(self.camera_distribution,
                                          f"{where}: camera_distribution")
            augment_2d_from_dict(self.augment_2d_config, f"{where}: augment_2d_config")
            detector_joints_from_dict(self.detector_joints_config,
                                      f"{where}: detector_joints_config")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.val_every < 0:
            bad("val_every", f"must be >= 0, got {self.val_every}")
        if not self.checkpoint_minutes >= 0:
            bad("checkpoint_minutes", f"must be >= 0, got {self.checkpoint_minutes}")
        if self.threads is not None and self.threads < 1:
            bad("threads", f"must be >= 1, got {self.threads}")
        if self.train_subjects is not None and set(self.train_subjects) & set(self.val_subjects):
            bad("val_subjects", "overlaps train_subjects: "
                f"{sorted(set(self.train_subjects) & set(self.val_subjects))}")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _type_ok(value: Any, annotation: Any) -> bool:
    """Does a JSON value fit a field annotation (as written in TrainConfig)?"""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    options = [t.strip() for t in str(text).split("|")]
    for t in options:
        if t == "None" and value is None:
            return True
        if t == "bool" and isinstance(value, bool):
            return True
        if t == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if t == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if t == "str" and isinstance(value, str):
            return True
        if t == "list" and isinstance(value, list):
            return True
        if t == "dict" and isinstance(value, dict):
            return True
    return False


def config_from_dict(data: Any, where: str = "config", base: TrainConfig | None = None
                     ) -> TrainConfig:
    """Build (or update ``base`` with) a validated :class:`TrainConfig` from a plain dict."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a JSON object of settings, got "
                          f"{type(data).__name__}")
    hints = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - set(hints))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(hints)}")
    values = dataclasses.asdict(base) if base is not None else {}
    for key, value in data.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {key}: expected {hints[key]}, got {value!r}")
        if key in ("train_subjects", "val_subjects") and value is not None:
            value = [str(s) for s in value]
        if key in ("lr", "lr_min", "lr_decay", "weight_decay", "grad_clip", "scale_jitter",
                   "bone_jitter", "bone_rotation", "track_start", "sample_balance", "ema_decay",
                   "detector_joints", "motion_weight",
                   "checkpoint_minutes") and value is not None:
            value = float(value)
        values[key] = value
    cfg = TrainConfig(**values)
    return cfg.validate(where)


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read a JSON config file (errors name the file and the problem)."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: malformed JSON at line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg}") from None
    return config_from_dict(data, path)


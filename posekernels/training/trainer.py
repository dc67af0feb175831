"""The training loop shared by every model (``posekernels train``).

Recipe (see :class:`~posekernels.training.TrainConfig` for every knob):

* data: world 3D sequences projected through the default virtual rig; one sample per frame
  (every ``frame_stride``-th frame, with a per-camera offset so the cameras cover different
  frames), windows gathered on the device by :class:`posekernels.data.WindowDataset` with
  replicate padding; each sample is horizontally flipped with probability 1/2
  (``flip_augment``); optionally the released code's 3D-target jitter (``target_jitter``:
  :func:`jitter_targets`);
* GLA-GCN: two stages, ``L_global + L_local`` for ``stage1_epochs`` (default half of the
  epochs) then ``L_local`` (models without the sequence branch: ``L_local`` throughout);
  global-node GCN: ``MSE + 0.001 CE`` on K-means pseudo labels (``aux="action"``, labels from
  :func:`posekernels.models.kmeans_pose_labels` on the training targets, flipped copies
  included), ``MSE + 0.0001 reconstruction`` (``aux="embedding"``) or MSE alone;
* Ranger (RAdam in Lookahead) or Adam; learning rate set once per epoch (cosine to ``lr_min``
  or exponential decay), BatchNorm momentum 0.1 -> 0.001 (``bn_momentum_decay``);
* bf16 autocast on CUDA; DistributedDataParallel under torchrun (each rank takes its share of
  every global batch; rank 0 validates and writes);
* reproducible: every epoch reseeds the shuffling generator and torch's RNG from
  ``(seed, epoch)``, so a run resumed from ``last.pt`` ends with the same weights as an
  uninterrupted one;
* optional exponential moving average of the weights (``ema_decay``, torch's
  ``AveragedModel``, BatchNorm statistics included): validated and saved as ``model.pt``;
* outputs in ``out_dir``: ``last.pt`` (model, optimizer, epoch, history, the weight average;
  written after every epoch and, in a single-process run, every ``checkpoint_minutes`` inside
  an epoch together with the position in the epoch and torch's RNG state, so that resuming
  mid-epoch also ends with the uninterrupted run's weights), ``model.pt`` (model, or its
  weight average, + config + final metrics), ``history.json``.
"""
from __future__ import annotations

import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoints import build_model, init_weights, read_checkpoint, save_checkpoint
from ..data.detector_joints import detector_joints_from_dict
from .camera_data import RandomCameraWindows, augment_2d_from_dict
from .config import ConfigError, TrainConfig
from .ddp import DistInfo, all_reduce_mean, barrier, cleanup_distributed, init_distributed
from .optim import bn_momentum, cosine_lr, exp_lr, make_optimizer, set_bn_momentum, set_lr

__all__ = ["train", "TrainingData", "prepare_data", "resolve_device"]


def resolve_device(name: str, dist_info: DistInfo | None = None) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(name)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available")
        if dist_info is not None and dist_info.enabled and dev.index is None:
            dev = torch.device("cuda", dist_info.local_rank)
    return dev


class TrainingData:
    """Training windows, validation sequences and (global-node) pseudo labels."""

    def __init__(self, dataset, val_sequences, labels: torch.Tensor | None, subjects: dict):
        self.dataset = dataset
        self.val_sequences = val_sequences
        self.labels = labels            # per row of dataset.targets, or None
        self.subjects = subjects

    def batch(self, ids: torch.Tensor):
        """(inputs (N, T, V, 2), target windows (N, T, V, 3), labels (N,) or None)."""
        ds = self.dataset
        if isinstance(ds, RandomCameraWindows):
            x, y, _ = ds.batch(ids)
            labels = None
            if self.labels is not None:
                m = ds.num_frames
                rows = torch.remainder(ids, m) + (ids >= m).to(torch.int64) * m
                labels = self.labels[rows]
            return x, y, labels
        frames = ds.frame_of(ids)
        idx = ds.window_indices(frames)
        rows = frames
        if ds.flip:
            shift = (ids >= ds.num_frames).to(torch.int64) * ds.num_total_frames
            idx = idx + shift.unsqueeze(1)
            rows = frames + shift
        labels = self.labels[rows] if self.labels is not None else None
        return ds.inputs[idx], ds.targets[idx], labels


TARGET_JITTER_DEGREES = (-5.0, 0.0, 5.0)
TARGET_JITTER_SCALES = (0.95, 1.0, 1.05)


def jitter_targets(y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The released code's 3D-target jitter (``target_jitter``): each sample's target windows
    (N, T, V, 3), camera frame, root-relative, get their x-y plane rotated about the root by an
    angle drawn from -5/0/+5 degrees and scaled by a factor drawn from 0.95/1/1.05 (uniformly,
    independently per sample; depth unchanged). The inputs are left alone: it is label noise
    that keeps the network from fitting the targets too exactly. Draws from ``generator`` (the
    trainer: torch's global generator, seeded per epoch and saved in last.pt)."""
    n = y.shape[0]
    pick = torch.randint(0, 3, (2, n), generator=generator).to(y.device)
    angle = torch.tensor(TARGET_JITTER_DEGREES, dtype=torch.float64,
                         device=y.device)[pick[0]] * (math.pi / 180.0)
    scale = torch.tensor(TARGET_JITTER_SCALES, dtype=torch.float64, device=y.device)[pick[1]]
    c = (scale * torch.cos(angle)).to(y.dtype).view(n, 1, 1)
    s = (scale * torch.sin(angle)).to(y.dtype).view(n, 1, 1)
    out = y.clone()
    out[..., 0] = c * y[..., 0] - s * y[..., 1]
    out[..., 1] = s * y[..., 0] + c * y[..., 1]
    return out


def _stride_masks(sequences, stride: int) -> list[np.ndarray] | None:
    if stride == 1:
        return None
    cams = sorted({s.camera for s in sequences})
    masks = []
    for s in sequences:
        offset = (cams.index(s.camera) * stride) // max(len(cams), 1)
        m = np.zeros(s.num_frames, dtype=bool)
        m[min(offset, s.num_frames - 1)::stride] = True
        masks.append(m)
    return masks


def prepare_data(cfg: TrainConfig, model: nn.Module, device: torch.device,
                 positions_3d: dict | None = None) -> TrainingData:
    """Load ``cfg.data_3d`` (or use ``positions_3d``), split the subjects, build the windows."""
    from ..data import WindowDataset, load_positions_3d
    from ..evaluation import sequences_from_3d

    if positions_3d is None:
        if not cfg.data_3d:
            raise ValueError("no training data: set data_3d (a VideoPose3D 3D npz, e.g. from "
                             "posekernels import-bvh)")
        positions_3d = load_positions_3d(cfg.data_3d, num_joints=model.num_joints)
    where = cfg.data_3d or "data"
    all_subjects = sorted(positions_3d)
    val = list(cfg.val_subjects)
    missing = sorted(set(val) - set(all_subjects))
    if missing:
        raise ValueError(f"{where}: validation subject(s) {missing} not in the data (it has "
                         f"{all_subjects})")
    train = cfg.train_subjects if cfg.train_subjects is not None else [
        s for s in all_subjects if s not in val]
    missing = sorted(set(train) - set(all_subjects))
    if missing:
        raise ValueError(f"{where}: training subject(s) {missing} not in the data (it has "
                         f"{all_subjects})")
    if not train:
        raise ValueError(f"{where}: no training subjects left (all are validation subjects)")
    val_seqs = (sequences_from_3d(positions_3d, subjects=val, detector_noise=cfg.detector_noise,
                                  seed=cfg.seed, fps=None, cameras=cfg.val_cameras,
                                  num_cameras=cfg.val_num_cameras, camera_seed=cfg.camera_seed)
                if val else [])
    sk = model.skeleton
    if cfg.cameras == "random":
        return _random_camera_data(cfg, model, device, positions_3d, train, val, val_seqs)
    train_seqs = sequences_from_3d(positions_3d, subjects=train,
                                   detector_noise=cfg.detector_noise, seed=cfg.seed, fps=None)
    ds = WindowDataset.from_sequences(
        train_seqs, receptive_field=int(getattr(model, "receptive_field", 1)),
        causal=bool(getattr(model, "causal", False)), flip=cfg.flip_augment,
        joints_left=sk.left, joints_right=sk.right, root=sk.root,
        valid=_stride_masks(train_seqs, cfg.frame_stride), device=device)
    labels = None
    if getattr(model, "aux", None) == "action":
        from ..models import kmeans_pose_labels

        rows = ds.frames
        if ds.flip:
            rows = torch.cat([rows, rows + ds.num_total_frames])
        poses = ds.targets[rows].cpu()
        big = poses.shape[0] > 20000
        lab = kmeans_pose_labels(poses, model.num_classes, seed=cfg.seed,
                                 n_init=1 if big else 4, batch_size=4096 if big else None)
        labels = torch.full((ds.targets.shape[0],), -1, dtype=torch.int64)
        labels[rows.cpu()] = lab
        labels = labels.to(device)
    return TrainingData(ds, val_seqs, labels, {"train": list(train), "val": val})


def _random_camera_data(cfg: TrainConfig, model: nn.Module, device: torch.device,
                        positions_3d: dict, train: list, val: list, val_seqs) -> TrainingData:
    """Training data for ``cameras="random"``: world windows, a fresh camera per sample."""
    from ..data.random_cameras import camera_distribution_from_dict

    sk = model.skeleton
    world, keys, masks = [], [], []
    for subject in train:
        for action in sorted(positions_3d[subject]):
            pos = np.asarray(positions_3d[subject][action], dtype=np.float64)
            world.append(pos)
            keys.append((subject, action))
            if cfg.frame_stride > 1:
                m = np.zeros(len(pos), dtype=bool)
                m[(len(keys) * 7) % cfg.frame_stride::cfg.frame_stride] = True
                if not m.any():
                    m[0] = True
                masks.append(m)
    ds = RandomCameraWindows(
        world, receptive_field=int(getattr(model, "receptive_field", 1)),
        causal=bool(getattr(model, "causal", False)), flip=cfg.flip_augment,
        joints_left=sk.left, joints_right=sk.right, root=sk.root,
        valid=masks or None, keys=keys, device=device,
        cameras=camera_distribution_from_dict(cfg.camera_distribution),
        augment=augment_2d_from_dict(cfg.augment_2d_config) if cfg.augment_2d else None,
        scale_jitter=cfg.scale_jitter, bone_jitter=cfg.bone_jitter,
        bone_rotation=cfg.bone_rotation, limb_swing=cfg.limb_swing, parents=sk.parents, speed_range=cfg.speed_range,
        track_start=cfg.track_start,
        detector_joints=(replace(detector_joints_from_dict(cfg.detector_joints_config),
                                 prob=cfg.detector_joints) if cfg.detector_joints else None))
    labels = None
    if getattr(model, "aux", None) == "action":
        labels = _canonical_pose_labels(ds, model, cfg.seed).to(device)
    return TrainingData(ds, val_seqs, labels, {"train": list(train), "val": val})


def _canonical_pose_labels(ds: RandomCameraWindows, model: nn.Module, seed: int) -> torch.Tensor:
    """K-means pseudo labels that do not depend on the camera: root-relative world poses turned
    about the vertical so that the hips face one way (mirrored copies for the flipped ids)."""
    from ..models import kmeans_pose_labels

    ids = torch.arange(len(ds), device=ds.device)
    poses = ds.world_windows(ids)[:, ds.ref].double().cpu()
    poses = poses - poses[:, ds.root:ds.root + 1]
    sk = model.skeleton
    hips = poses[:, sk.left[0]] - poses[:, sk.right[0]] if sk.left else poses[:, 1]
    ang = torch.atan2(hips[:, 1], hips[:, 0])
    c, s = torch.cos(-ang), torch.sin(-ang)
    x, y = poses[..., 0], poses[..., 1]
    poses = torch.stack([c[:, None] * x - s[:, None] * y, s[:, None] * x + c[:, None] * y,
                         poses[..., 2]], -1).float()
    big = poses.shape[0] > 20000
    lab = kmeans_pose_labels(poses, model.num_classes, seed=seed, n_init=1 if big else 4,
                             batch_size=4096 if big else None)
    return torch.as_tensor(lab, dtype=torch.int64).reshape(-1)


class _LossModule(nn.Module):
    """Wraps a model so that DistributedDataParallel sees the loss computation as forward."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x, target_seq, labels, stage: int):
        m = self.model
        if hasattr(m, "receptive_field"):  # GLA-GCN family
            return m.loss(x, target_seq, stage=stage)
        return m.loss(x[:, 0], target_seq[:, 0], labels)


def _read_progress(progress: Any, path: str) -> dict | None:
    """Check a checkpoint's ``epoch_progress`` entry (the position inside an unfinished epoch)."""
    if progress is None:
        return None
    ints = ("batch", "batches", "batch_size", "count")
    ok = isinstance(progress, dict) and all(
        isinstance(progress.get(k), int) and progress[k] >= 0 for k in ints) and all(
        isinstance(progress.get(k), (int, float)) for k in ("total", "seconds")) and \
        isinstance(progress.get("rng"), torch.Tensor) and progress["rng"].dtype == torch.uint8
    if ok and progress.get("rng_cuda") is not None:
        ok = isinstance(progress["rng_cuda"], torch.Tensor) and \
            progress["rng_cuda"].dtype == torch.uint8
    if not ok or not 0 < progress["batch"] < progress["batches"]:
        raise ValueError(f"{path}: malformed 'epoch_progress' entry (expected the position "
                         "inside an epoch that a training run writes)")
    return progress


def _epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    if cfg.lr_schedule == "cosine":
        return cosine_lr(epoch, cfg.epochs, cfg.lr, cfg.lr_min)
    return exp_lr(epoch, cfg.lr, cfg.lr_decay)


def _stage1_epochs(cfg: TrainConfig, model: nn.Module) -> int:
    if not getattr(model, "sequence_branch", False):
        return 0
    return cfg.stage1_epochs if cfg.stage1_epochs is not None else cfg.epochs // 2


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is optional
        return None
    return tqdm(iterable, total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True)


def _write_json(path: str, obj: Any) -> None:
    from ..data.io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def train(cfg: TrainConfig, *, resume: str | None = None, stop_after: int | None = None,
          positions_3d: dict | None = None, log=print) -> dict:
    """Run (or resume) a training run; returns ``{"history", "metrics", "model_path", ...}``.

    ``resume``: a ``last.pt`` checkpoint (or ``"auto"`` for ``<out_dir>/last.pt`` when it
    exists). ``stop_after``: stop once this many epochs are complete (to split a run).
    ``positions_3d``: world sequences to use instead of reading ``cfg.data_3d``.
    """
    cfg.validate()
    probe = "cuda" if cfg.device.startswith("cuda") or (
        cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
    joined = torch.distributed.is_available() and torch.distributed.is_initialized()
    info = init_distributed(probe)
    try:
        return _train(cfg, info, resume, stop_after, positions_3d, log)
    finally:
        if not joined:  # leave a process group the caller set up alone
            cleanup_distributed()


def _train(cfg, info: DistInfo, resume, stop_after, positions_3d, log) -> dict:
    device = resolve_device(cfg.device, info)
    if cfg.threads is not None and device.type == "cpu":
        torch.set_num_threads(cfg.threads)
    if cfg.tune_allocator and device.type == "cpu":
        from .. import tune_cpu_allocator

        tune_cpu_allocator()
    main = info.is_main
    say = log if main else (lambda *a, **k: None)
    if main:
        os.makedirs(cfg.out_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model).to(device)
    last_path = os.path.join(cfg.out_dir, "last.pt")
    if resume == "auto":
        resume = last_path if os.path.isfile(last_path) else None
    if cfg.init_from and not resume:  # a resumed run takes its last.pt's weights instead
        try:
            got = init_weights(model, cfg.init_from, map_location=device)
        except ValueError as exc:
            raise ConfigError(f"init_from: {exc}") from None
        say(f"started from {got['source']}: {got['copied']} tensors copied"
            + (f", widened {got['widened']}" if got["widened"] else ""))
    data = prepare_data(cfg, model, device, positions_3d)
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay)
    stage1 = _stage1_epochs(cfg, model)

    start_epoch, history, partial = 0, [], None
    if resume:
        state = read_checkpoint(resume, map_location=device)
        for key in ("optimizer", "epoch"):
            if key not in state:
                raise ValueError(f"{resume}: missing key {key!r}: not a resumable checkpoint "
                                 "(use the last.pt a training run writes)")
        if dict(state["model_config"]) != dict(cfg.model):
            raise ValueError(f"{resume}: its model_config {dict(state['model_config'])} differs "
                             f"from this run's model {dict(cfg.model)}")
        model.load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError) as exc:
            raise ValueError(f"{resume}: optimizer state does not fit ({exc})") from None
        start_epoch = int(state["epoch"])
        history = list(state.get("history", []))
        partial = _read_progress(state.get("epoch_progress"), resume)
        say(f"resumed from {resume} after epoch {start_epoch}"
            + (f", batch {partial['batch']} of epoch {start_epoch + 1}" if partial else ""))

    ema = None
    if cfg.ema_decay > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay),
                            use_buffers=True)
        if resume and state.get("ema") is not None:
            try:
                ema.load_state_dict(state["ema"])
            except (RuntimeError, KeyError) as exc:
                raise ValueError(f"{resume}: weight average does not fit ({exc})") from None
        elif resume:
            say("ema_decay: the checkpoint holds no weight average; it starts from the "
                "resumed weights")

    net = _LossModule(model)
    if info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        net = DDP(net, device_ids=[device.index] if device.type == "cuda" else None,
                  find_unused_parameters=stage1 > 0)
    use_amp = cfg.amp and (device.type == "cuda" or cfg.amp_cpu)
    ds = data.dataset
    n = ds.num_frames
    per_rank = max(1, cfg.batch_size // info.world_size)
    global_batch = per_rank * info.world_size
    n_batches = n // global_batch + (1 if n % global_batch >= 2 * info.world_size else 0)
    if n_batches == 0:
        raise ValueError(f"{n} training samples are too few for batch size {cfg.batch_size} on "
                         f"{info.world_size} process(es)")
    nparams = sum(p.numel() for p in model.parameters())
    say(f"model {cfg.model} ({nparams:,} parameters) on {device}"
        f"{f' x {info.world_size} ranks' if info.enabled else ''}; "
        f"{n:,} training samples/epoch ({len(ds.lengths)} sequences, subjects "
        f"{data.subjects['train']}), validation {data.subjects['val']}")

    def save_last(epochs_done: int, **extra) -> None:
        if ema is not None:
            extra["ema"] = {k: v.detach().cpu() for k, v in ema.state_dict().items()}
        save_checkpoint(last_path, model, model_config=cfg.model, config=cfg.to_dict(),
                        epoch=epochs_done, optimizer=optimizer.state_dict(), history=history,
                        frame_rate=float(cfg.frame_rate), **extra)

    # the weights that are validated and saved as model.pt: the average when there is one
    final = ema.module if ema is not None else model

    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
    # per-sample draw weights (sample_balance, motion_weight), the same every epoch
    weights = None
    if cfg.motion_weight > 0:
        weights = ds.sample_weights(cfg.sample_balance, motion=cfg.motion_weight).cpu()
    elif cfg.sample_balance > 0:
        weights = ds.sample_weights(cfg.sample_balance).cpu()
    metrics: dict = history[-1].get("val", {}) if history else {}
    for epoch in range(start_epoch, end_epoch):
        t0 = time.perf_counter()
        lr = _epoch_lr(cfg, epoch)
        set_lr(optimizer, lr)
        if cfg.bn_momentum_decay:
            set_bn_momentum(model, bn_momentum(epoch, cfg.epochs))
        stage = 1 if epoch < stage1 else 2
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        if weights is not None:
            order = torch.multinomial(weights, n, replacement=True, generator=gen)
        else:
            order = torch.randperm(n, generator=gen)
        if ds.flip:
            order = order + torch.randint(0, 2, (n,), generator=gen) * n
        torch.manual_seed(cfg.seed * 7919 + epoch * 104_729 + info.rank)
        order = order.to(device)
        model.train()
        total, count, first, done_s = 0.0, 0, 0, 0.0
        if partial is not None:
            if partial["batches"] == n_batches and partial["batch_size"] == global_batch:
                first, total, count = partial["batch"], partial["total"], partial["count"]
                done_s = partial["seconds"]
                torch.set_rng_state(partial["rng"].cpu())
                if device.type == "cuda" and partial.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state(partial["rng_cuda"].cpu(), device)
            else:
                say(f"epoch {epoch + 1}: the checkpoint's position ({partial['batch']} of "
                    f"{partial['batches']} batches of {partial['batch_size']}) does not fit "
                    f"this run's {n_batches} batches of {global_batch}; the epoch starts over")
            partial = None
        every_s = cfg.checkpoint_minutes * 60 if (main and not info.enabled) else 0.0
        saved_at = time.perf_counter()
        batches = range(first, n_batches)
        bar = _progress(batches, n_batches, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and main)
        if bar is not None and first:
            bar.update(first)
        for b in (bar if bar is not None else batches):
            ids = order[b * global_batch:(b + 1) * global_batch][info.rank::info.world_size]
            x, y, labels = data.batch(ids)
            if cfg.target_jitter:
                y = jitter_targets(y)
            with (torch.autocast(device.type, dtype=torch.bfloat16) if use_amp
                  else nullcontext()):
                loss = net(x, y, labels, stage)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update_parameters(model)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise FloatingPointError(f"epoch {epoch + 1}, batch {b}: loss is {value}")
            total += value
            count += 1
            if bar is not None:
                bar.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}", stage=stage)
            now = time.perf_counter()
            if every_s and b + 1 < n_batches and now - saved_at >= every_s:
                progress = {"batch": b + 1, "batches": n_batches, "batch_size": global_batch,
                            "total": total, "count": count,
                            "seconds": round(done_s + now - t0, 2),
                            "rng": torch.get_rng_state(),
                            "rng_cuda": (torch.cuda.get_rng_state(device)
                                         if device.type == "cuda" else None)}
                save_last(epoch, epoch_progress=progress)
                saved_at = time.perf_counter()
        if bar is not None:
            bar.close()
        train_loss = all_reduce_mean(total / max(count, 1), info, device)
        record = {"epoch": epoch + 1, "stage": stage, "lr": lr, "loss": train_loss,
                  "steps": count, "seconds": round(done_s + time.perf_counter() - t0, 2)}
        validate = data.val_sequences and main and (
            epoch + 1 == cfg.epochs or (cfg.val_every and (epoch + 1) % cfg.val_every == 0))
        if validate:
            from ..evaluation import evaluate_sequences, headline

            summary = evaluate_sequences(final, data.val_sequences, flip_tta=cfg.test_flip,
                                         batch_size=cfg.val_batch_size).summary()
            metrics = headline(summary)
            record["val"] = metrics
            # the moving average when the run keeps one (ema_decay > 0), else the last weights
            record["val_weights"] = "average" if ema is not None else "last"
        history.append(record)
        msg = (f"epoch {epoch + 1}/{cfg.epochs} stage {stage} lr {lr:.2e} loss {train_loss:.5f}"
               f" ({record['seconds']:.0f} s)")
        if "val" in record:
            msg += (f" | val MPJPE {metrics['mpjpe']:.1f} mm, P-MPJPE {metrics['p_mpjpe']:.1f}"
                    " mm")
        say(msg)
        if main:
            save_last(epoch + 1)
            _write_json(os.path.join(cfg.out_dir, "history.json"), history)
        barrier(info)

    model_path = os.path.join(cfg.out_dir, "model.pt")
    done = len(history) >= cfg.epochs
    if main and done:
        save_checkpoint(model_path, final, model_config=cfg.model, config=cfg.to_dict(),
                        epoch=cfg.epochs, metrics=metrics, frame_rate=float(cfg.frame_rate))
    barrier(info)
    return {"history": history, "metrics": metrics, "model": final,
            "model_path": model_path if done else None, "last_path": last_path,
            "parameters": nparams, "rank": info.rank, "world_size": info.world_size}

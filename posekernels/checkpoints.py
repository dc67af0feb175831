"""The one place that loads models: posekernels checkpoints, the shipped default lifters, and
:func:`load_model`, which every command (``stream``, ``demo``, ``export``, ``evaluate``) uses.

* :func:`save_checkpoint`, :func:`read_checkpoint`, :func:`load_checkpoint` -- checkpoint files
  (below); :func:`build_model` -- a model from its config;
* :func:`load_default_model`, :func:`default_checkpoint_path` -- the shipped lifters;
* :func:`load_model` -- ``"default"`` (with a mode) or a checkpoint file, in eval mode on a
  device; a default model that is missing raises :class:`DefaultModelUnavailable`.

A checkpoint is a ``torch.save`` dict of plain containers and tensors, so it is read with
``torch.load(weights_only=True)`` (no code runs while loading)::

    {"format": "posekernels-checkpoint", "version": 1,
     "model_config": {"arch": "glagcn", "receptive_field": 27, "channels": 32, ...},
     "model": <state dict>,
     # optional:
     "config": <TrainConfig as a dict>, "epoch": <epochs completed>, "optimizer": <state>,
     "metrics": {...}, "history": [...],
     "frame_rate": <frames per second of the training motion, e.g. 50.0>}

``model_config["arch"]`` is ``"glagcn"`` (:class:`posekernels.models.GLAGCN` keyword
arguments), ``"released_sagcn"`` or ``"global_node"`` (:class:`~posekernels.models.GlobalNodeGCN`).
Writes go to a temporary file in the destination folder, then :func:`os.replace`, so a failed
or interrupted save never leaves a partial file. Every loading problem raises ``ValueError``
naming the file and what is wrong (missing keys, unknown architecture, state dict mismatch).

The package ships two small trained lifters (see :func:`load_default_model`): a causal one
(``posekernels/assets/default_causal.pt``: the pose of frame t as soon as frame t arrives) and a
centred one (``posekernels/assets/default_centered.pt``), used by ``--checkpoint default``.
``load_default_model()`` takes the centred one by default and ``load_model("default")`` the
causal one (streaming, export). Every loader reads files with ``torch.load(weights_only=True)``
(torch's tensor and container globals only), so a crafted file is refused before any of its code
could run.
"""
from __future__ import annotations

import os
from typing import Any, Mapping

import torch
from torch import nn

from .data.io import atomic_write
from .models.checkpoint import describe_load_error

__all__ = ["FORMAT", "build_model", "model_config_of", "save_checkpoint", "read_checkpoint",
           "load_checkpoint", "default_checkpoint_path", "load_default_model", "load_model",
           "DefaultModelUnavailable", "atomic_torch_save", "init_weights", "checkpoint_path",
           "default_training_config"]

FORMAT = "posekernels-checkpoint"
VERSION = 1
DEFAULT_MODES = {"causal": "default_causal.pt", "centered": "default_centered.pt"}


def build_model(model_config: Mapping[str, Any]) -> nn.Module:
    """Construct a model from ``{"arch": ..., **kwargs}`` (see the module docstring)."""
    from .models import GLAGCN, GlobalNodeGCN, released_sagcn

    if not isinstance(model_config, Mapping) or "arch" not in model_config:
        raise ValueError("model config must be a dict with an 'arch' entry")
    kwargs = {k: v for k, v in model_config.items() if k != "arch"}
    arch = model_config["arch"]
    ctor = {"glagcn": GLAGCN, "released_sagcn": released_sagcn,
            "global_node": GlobalNodeGCN}.get(arch)
    if ctor is None:
        raise ValueError(f"unknown model arch {arch!r}; expected 'glagcn', 'released_sagcn' "
                         "or 'global_node'")
    try:
        model = ctor(**kwargs)
    except TypeError as exc:
        raise ValueError(f"model config for {arch!r} has a bad argument: {exc}") from None
    model.model_config = dict(model_config)
    return model


def model_config_of(model: nn.Module) -> dict:
    """The ``model_config`` a model was built with by :func:`build_model`."""
    cfg = getattr(model, "model_config", None)
    if cfg is None:
        raise ValueError("this model was not built by posekernels.checkpoints.build_model, so its "
                         "config is unknown: build it with build_model({'arch': ..., ...})")
    return dict(cfg)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace``."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) \
        else model


def save_checkpoint(path: str | os.PathLike, model: nn.Module, *,
                    model_config: Mapping[str, Any] | None = None, **extra: Any) -> None:
    """Save ``model``'s state dict and config (plus ``extra`` entries such as ``config``,
    ``epoch``, ``optimizer``, ``metrics``) atomically. Tensors are stored on the CPU."""
    model = _unwrap(model)
    cfg = dict(model_config) if model_config is not None else model_config_of(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {"format": FORMAT, "version": VERSION, "model_config": cfg, "model": state}
    for key, value in extra.items():
        if key in obj:
            raise ValueError(f"extra entry {key!r} would overwrite a checkpoint field")
        obj[key] = value
    atomic_torch_save(obj, path)


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict:
    """Load and check a checkpoint dict (``weights_only=True``); raises ValueError naming the
    file on any problem."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, expected a posekernels checkpoint file")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such checkpoint file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"{path}: empty file (0 bytes), expected a posekernels checkpoint")
    try:
        # torch's own allow-list only (tensors, plain containers, numbers): a checkpoint that
        # needs any other global is refused, never unpickled.
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # pickle errors, zip errors, unsupported globals, EOF ...
        raise ValueError(f"{path}: not a readable posekernels checkpoint "
                         f"({describe_load_error(exc)}); expected a torch.save file written by "
                         "posekernels.checkpoints.save_checkpoint") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a posekernels checkpoint (holds a "
                         f"{type(obj).__name__}, expected a dict)")
    for key in ("model_config", "model"):
        if key not in obj:
            found = ", ".join(sorted(map(str, obj))) or "nothing"
            raise ValueError(f"{path}: missing key {key!r} (found: {found}); a posekernels "
                             "checkpoint holds 'model_config' and 'model'")
    if obj.get("format", FORMAT) != FORMAT:
        raise ValueError(f"{path}: format {obj.get('format')!r} is not {FORMAT!r}")
    if not isinstance(obj["model"], Mapping) or not all(
            isinstance(v, torch.Tensor) for v in obj["model"].values()):
        raise ValueError(f"{path}: 'model' must be a state dict of tensors")
    if not isinstance(obj["model_config"], Mapping):
        raise ValueError(f"{path}: 'model_config' must be a dict, got "
                         f"{type(obj['model_config']).__name__}")
    return obj


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor], path: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)}"
              for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys {missing[:8]}" + (" ..." if len(missing) > 8 else ""))
    if unexpected:
        problems.append(f"unexpected keys {unexpected[:8]}" +
                        (" ..." if len(unexpected) > 8 else ""))
    if shapes:
        problems.append("shape mismatch " + "; ".join(shapes[:4]) +
                        (" ..." if len(shapes) > 4 else ""))
    if problems:
        raise ValueError(f"{path}: state dict does not match its model_config: "
                         + ", ".join(problems))
    model.load_state_dict(state, strict=True)


def _widen(new: torch.Tensor, old: torch.Tensor, interleave: tuple[int, int] | None) -> bool:
    """Copy ``old`` into a wider ``new`` where they differ in one dimension only (input
    channels added): the leading slice, or with ``interleave`` = (old, new) channels per joint
    the first channels of every joint (the input BatchNorm's joint * channels + coordinate
    layout). The added entries keep ``new``'s fresh initialisation, except weights of the
    added input channels (zero: the model starts out ignoring them). Returns False when the
    shapes do not fit that pattern. Called under ``torch.no_grad()``."""
    if new.dim() != old.dim():
        return False
    diff = [d for d in range(new.dim()) if new.shape[d] != old.shape[d]]
    if len(diff) != 1 or new.shape[diff[0]] < old.shape[diff[0]]:
        return False
    d = diff[0]
    if interleave is not None and new.dim() == 1:
        co, cn = interleave
        if old.shape[0] % co or new.shape[0] % cn or old.shape[0] // co != new.shape[0] // cn:
            return False
        new.view(-1, cn)[:, :co].copy_(old.view(-1, co))
        return True
    if new.dim() > 1:  # weights: the added input channels start at zero
        new.zero_()
    new.narrow(d, 0, old.shape[d]).copy_(old)
    return True


def checkpoint_path(spec: str | os.PathLike) -> str:
    """A checkpoint file's path, or for ``"default:causal"`` / ``"default:centered"`` (plain
    ``"default"``: centred) the shipped lifter's."""
    s = os.fspath(spec)
    if s == "default" or s.startswith("default:"):
        return default_checkpoint_path(s.partition(":")[2] or "centered")
    return s


def init_weights(model: nn.Module, source: str | os.PathLike,
                 map_location: Any = "cpu", weights: str = "auto") -> dict:
    """Start ``model`` from the weights of the checkpoint ``source`` (``"default"``,
    ``"default:causal"`` or ``"default:centered"`` for a shipped lifter): fine-tuning.
    ``weights`` as in :func:`load_checkpoint` (a run's last.pt: its weight average unless
    ``"last"``).

    Every tensor whose name and shape match is copied. A tensor that is wider in exactly one
    dimension (a GLA-GCN built with ``window_norm=True`` from one without: its input layers take
    four channels per joint instead of two) takes the source in its first entries (in the input
    BatchNorm, the first two channels of every joint); the weights of the added channels start
    at zero. Anything else -- a tensor of the model that the source lacks, a source tensor the
    model has no place for, another shape -- is refused with a ValueError naming the tensors.
    Returns ``{"copied": n, "widened": [names]}``."""
    src = checkpoint_path(source)
    obj = read_checkpoint(src, map_location)
    state, _ = _weights_state(obj, src, weights)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ValueError(f"{src}: cannot start this model from it: "
                         + ", ".join(x for x in (
                             f"tensors it lacks {missing[:6]}" if missing else "",
                             f"tensors this model has no place for {unexpected[:6]}"
                             if unexpected else "") if x))
    cin_old = 4 if obj["model_config"].get("window_norm") else 2
    cin_new = 4 if getattr(model, "window_norm", False) else 2
    copied, widened, bad = 0, [], []
    with torch.no_grad():
        for k, t in own.items():
            s_t = state[k].to(t.dtype)
            if s_t.shape == t.shape:
                t.copy_(s_t)
                copied += 1
            elif _widen(t, s_t, (cin_old, cin_new) if k.startswith("data_bn.") else None):
                widened.append(k)
            else:
                bad.append(f"{k}: source {tuple(s_t.shape)}, model {tuple(t.shape)}")
    if bad:
        raise ValueError(f"{src}: cannot start this model from it: shapes differ: "
                         + "; ".join(bad[:4]) + (" ..." if len(bad) > 4 else ""))
    # ``own`` holds the model's own parameters and buffers (state_dict shares their storage),
    # so the copies above have already changed the model
    return {"copied": copied, "widened": widened, "source": src}


WEIGHTS = ("auto", "average", "last")


def _weights_state(obj: Mapping[str, Any], path: str, weights: str
                   ) -> tuple[Mapping[str, torch.Tensor], str]:
    """The state dict ``weights`` names in a checkpoint dict, and which one it is: "average",
    "last" (the last weights of a file that also holds their average) or "model" (a file with
    one set of weights). A training run's last.pt with ``ema_decay`` > 0 holds both its last
    weights ("model") and their moving average ("ema": torch's ``AveragedModel`` state, the model's
    entries under ``module.`` plus ``n_averaged``); every other checkpoint holds one set."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
    ema = obj.get("ema")
    if weights == "last" or (weights == "auto" and ema is None):
        return obj["model"], "model" if ema is None else "last"
    if ema is None:
        raise ValueError(f"{path}: weights='average' but the checkpoint holds no weight "
                         "average (only a training run's last.pt written with ema_decay > 0 "
                         "has one; its model.pt is the average itself)")
    if not isinstance(ema, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in ema.values()):
        raise ValueError(f"{path}: 'ema' must be a state dict of tensors")
    stray = [k for k in ema if k != "n_averaged" and not str(k).startswith("module.")]
    if stray:
        raise ValueError(f"{path}: 'ema' holds entries outside 'module.' ({stray[:4]}); "
                         "expected torch.optim.swa_utils.AveragedModel's state dict")
    return {k[len("module."):]: v for k, v in ema.items() if k != "n_averaged"}, "average"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu",
                    weights: str = "auto") -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights; returned in eval mode.

    ``weights`` matters for a training run's last.pt written with ``ema_decay`` > 0, which
    holds the last weights and their moving average: ``"auto"`` (default) and ``"average"``
    take the average (what the trainer validates and saves as model.pt), ``"last"`` the last
    weights. Other checkpoints hold one set of weights, which ``"auto"`` and ``"last"`` take and
    ``"average"`` refuses.

    The training config, metrics and epoch (when saved), and which weights were loaded
    (``"weights"``: ``"average"``, ``"last"`` or, from a file with one set, ``"model"``), are
    attached as ``model.checkpoint_info`` (a dict); ``model.model_config`` holds the model
    config; a checkpoint's ``frame_rate`` becomes ``model.frame_rate`` (the rate of the motion
    it was trained on, which input at another ``fps`` is resampled to).
    """
    path = os.fspath(path)
    obj = read_checkpoint(path, map_location)
    state, which = _weights_state(obj, path, weights)
    try:
        model = build_model(obj["model_config"])
    except ValueError as exc:
        raise ValueError(f"{path}: model_config: {exc}") from None
    _load_state(model, state, path)
    model.checkpoint_info = {k: obj[k] for k in ("config", "epoch", "metrics") if k in obj}
    model.checkpoint_info["weights"] = which
    if "frame_rate" in obj:
        rate = obj["frame_rate"]
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 1 <= rate <= 1000:
            raise ValueError(f"{path}: frame_rate must be a number of frames per second in "
                             f"[1, 1000], got {rate!r}")
        model.frame_rate = float(rate)  # what lift_sequence / StreamingLifter(fps=...) read
    if map_location is not None and not callable(map_location):
        model.to(map_location)
    return model.eval()


def _default_mode(mode: str) -> str:
    m = {"centred": "centered"}.get(mode, mode)
    if m not in DEFAULT_MODES:
        raise ValueError(f"mode must be one of {sorted(DEFAULT_MODES)}, got {mode!r}")
    return m


def default_checkpoint_path(mode: str = "centered") -> str:
    """Path of the shipped checkpoint of ``mode`` ("causal" or "centered") in
    ``posekernels/assets``."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets",
                        DEFAULT_MODES[_default_mode(mode)])


def load_default_model(map_location: Any = "cpu", mode: str = "centered") -> nn.Module:
    """A shipped default lifter (trained on CMU motion capture through random cameras, see the
    README), eval mode: ``mode="causal"`` or ``"centered"``."""
    path = default_checkpoint_path(mode)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: the default {_default_mode(mode)} model is missing from this "
                         "installation (package data 'assets/*' was not installed)")
    return load_checkpoint(path, map_location)


# Settings of a run that belong to the machine it ran on, not to its recipe.
_MACHINE_SETTINGS = ("data_3d", "out_dir", "device", "threads", "init_from")


def default_training_config(mode: str = "centered") -> dict:
    """The training recipe (TrainConfig fields, as a dict) the shipped ``mode`` lifter was
    trained with, without the settings of the machine it ran on (``data_3d``, ``out_dir``,
    ``device``, ``threads``, ``init_from``): the base for tuning it further
    (``posekernels train --config default:centered --init-from default:centered ...``)."""
    path = default_checkpoint_path(mode)
    if not os.path.isfile(path):
        raise ValueError(f"{path}: the default {_default_mode(mode)} model is missing from this "
                         "installation (package data 'assets/*' was not installed)")
    config = read_checkpoint(path).get("config")
    if not isinstance(config, dict):
        raise ValueError(f"{path}: holds no training config")
    return {k: v for k, v in config.items() if k not in _MACHINE_SETTINGS}


class DefaultModelUnavailable(RuntimeError):
    """The default checkpoint asked for is not part of this installation (or cannot be read)."""


def load_model(checkpoint: str | os.PathLike = "default",
               device: torch.device | str = "cpu", mode: str | None = None,
               weights: str = "auto") -> nn.Module:
    """The model named by ``checkpoint`` (``"default"`` or a checkpoint file), in eval mode on
    ``device``.

    ``mode`` picks the default model: None or "causal" the causal lifter, "centered" (or
    "centred") the centred one; it is ignored for a checkpoint file (whose model has its own
    mode). ``weights`` picks between a training run's last weights and their moving average
    in a last.pt that holds both (:func:`load_checkpoint`). A default model that is missing or
    unreadable raises :class:`DefaultModelUnavailable`, a bad checkpoint file ``ValueError``
    naming the file (as :func:`load_checkpoint`); both messages say what is wrong."""
    if str(checkpoint) == "default":  # a checkpoint file's weights are checked as it is read
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
        if weights == "average":
            raise ValueError("weights='average' names a training run's weight average in its "
                             "last.pt; the default models hold one set of weights")
        try:
            model = load_default_model(map_location="cpu", mode=mode or "causal")
        except (OSError, ValueError) as exc:
            raise DefaultModelUnavailable(
                f"the default checkpoint could not be loaded: {exc}; pass --checkpoint PATH to a "
                "trained checkpoint") from None
        return model.to(device).eval()
    return load_checkpoint(checkpoint, map_location="cpu",
                           weights=weights).to(device).eval()

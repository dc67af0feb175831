"""The one place where the streaming commands (``stream``, ``demo``, ``export``) get a model.

``load_model("default", mode=...)`` asks
:func:`posekernels.training.checkpoint.load_default_model` for the default model of that mode
shipped in ``posekernels/assets`` (the causal one when ``mode`` is None or "causal", the centred
one for "centered"); ``load_model(path)`` loads a posekernels
checkpoint with :func:`posekernels.training.checkpoint.load_checkpoint`. Either way a missing
loader or file raises :class:`DefaultModelUnavailable` / ``ValueError`` with a message that says
what is missing, never a bare traceback from deep inside torch. Files are read with
``torch.load(weights_only=True)`` (torch's tensor and container globals only), so a crafted
file is refused before any of its code could run.
"""
from __future__ import annotations

import os

import torch
from torch import nn

__all__ = ["load_model", "DefaultModelUnavailable"]


class DefaultModelUnavailable(RuntimeError):
    """The default checkpoint (or the code that loads it) is not part of this installation."""


def load_model(checkpoint: str | os.PathLike = "default",
               device: torch.device | str = "cpu", mode: str | None = None) -> nn.Module:
    """The model named by ``checkpoint`` (``"default"`` or a checkpoint file), in eval mode.

    ``mode`` picks the default model: None or "causal" the causal lifter, "centered" (or
    "centred") the centred one; it is ignored for a checkpoint file (whose model has its own
    mode)."""
    if str(checkpoint) == "default":
        try:
            from ..training.checkpoint import load_default_model
        except ImportError as exc:
            raise DefaultModelUnavailable(
                "the default checkpoint is not available: posekernels.training.checkpoint "
                f"cannot be imported ({exc}); pass --checkpoint PATH to a trained checkpoint"
            ) from None
        try:
            model = load_default_model(map_location="cpu", mode=mode or "causal")
        except (OSError, ValueError) as exc:
            raise DefaultModelUnavailable(
                f"the default checkpoint could not be loaded: {exc}; pass --checkpoint PATH to a "
                "trained checkpoint") from None
        return model.to(device).eval()
    path = os.fspath(checkpoint)
    if os.path.isdir(path):
        raise ValueError(f"checkpoint {path!r} is a directory, expected a posekernels "
                         "checkpoint file")
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint {path!r} does not exist (or is not a file)")
    try:
        from ..training.checkpoint import load_checkpoint
    except ImportError as exc:
        raise ValueError(f"cannot load {path!r}: posekernels.training.checkpoint is not "
                         f"available ({exc})") from None
    return load_checkpoint(path, map_location="cpu").to(device).eval()

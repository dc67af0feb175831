"""Checkpoints for training: the names of :mod:`posekernels.checkpoints`, where models are saved
and loaded (kept here so that ``posekernels.training.checkpoint`` imports keep working)."""
from __future__ import annotations

from ..checkpoints import (FORMAT, VERSION, atomic_torch_save, build_model,
                           default_checkpoint_path, load_checkpoint, load_default_model,
                           model_config_of, read_checkpoint, save_checkpoint)

__all__ = ["FORMAT", "VERSION", "build_model", "model_config_of", "save_checkpoint", "read_checkpoint",
           "load_checkpoint", "default_checkpoint_path", "load_default_model", "atomic_torch_save"]

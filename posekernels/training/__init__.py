"""Training: config, Ranger/Lookahead, the two-stage GLA-GCN and global-node GCN loops,
checkpoints and DistributedDataParallel helpers (``posekernels train``).

* :class:`TrainConfig`, :func:`load_config` -- settings from JSON and flags;
* :func:`train` -- the training loop (see :mod:`posekernels.training.trainer`);
* :class:`Lookahead`, :func:`ranger` -- the optimiser of the GLA-GCN recipe;
* :func:`build_model`, :func:`save_checkpoint`, :func:`read_checkpoint`,
  :func:`load_checkpoint`, :func:`load_default_model`, :func:`default_checkpoint_path` --
  checkpoints (state dict + model config, ``weights_only`` loads), from
  :mod:`posekernels.checkpoints`.
"""
from __future__ import annotations

from ..checkpoints import (build_model, default_checkpoint_path, load_checkpoint,
                           load_default_model, read_checkpoint, save_checkpoint)
from .config import ConfigError, TrainConfig, config_from_dict, load_config
from .optim import Lookahead, bn_momentum, cosine_lr, ranger
from .trainer import prepare_data, train

__all__ = [
    "TrainConfig", "ConfigError", "load_config", "config_from_dict", "train", "prepare_data",
    "Lookahead", "ranger", "cosine_lr", "bn_momentum", "build_model", "save_checkpoint",
    "read_checkpoint", "load_checkpoint", "load_default_model", "default_checkpoint_path",
]

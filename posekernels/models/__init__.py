"""Graph-convolutional 3D pose lifting models built on :mod:`posekernels.ops`.

* :class:`GLAGCN` -- the full GLA-GCN (sequence branch, strided modules, individually connected
  layer) with its ablations and a causal variant; :func:`released_sagcn` -- the authors' released
  single-frame model; :func:`load_official_checkpoint` -- their checkpoints in our modules
  (``variant="mrcnn"``: their HumanEva Mask R-CNN model, with :data:`HUMANEVA15_MRCNN` and
  :func:`humaneva15_from_coco17`).
* :class:`GlobalNodeGCN` -- the single-frame global-node GCN (and its baseline GCN; symmetric
  adjacency normalisation by default, ``adjacency_norm="row"`` for SemGCN's), with
  :func:`kmeans_pose_labels` for the pseudo action classes of its auxiliary task.
* Loss helpers: GLA-GCN's two training stages (:func:`glagcn_stage1_loss`,
  :func:`glagcn_stage2_loss`), :func:`mpjpe_loss`, and :func:`global_node_loss`.

Every deviation from the two papers and from the released code: docs/FIDELITY.md.
"""
from __future__ import annotations

from .checkpoint import (HUMANEVA15_MRCNN, convert_official_state_dict, humaneva15_from_coco17,
                         load_official_checkpoint, official_key_shapes)
from .glagcn import (GLAGCN, AGCNBlock, GraphUnit, JointHead, StridedModule, TemporalUnit,
                     glagcn_global_loss, glagcn_local_loss, glagcn_stage1_loss, glagcn_stage2_loss,
                     mpjpe_loss, released_sagcn, target_pose)
from .global_node import GlobalNodeGCN, GlobalNodeLayer, global_node_loss, kmeans_pose_labels

__all__ = [
    "GLAGCN", "released_sagcn", "load_official_checkpoint", "convert_official_state_dict",
    "official_key_shapes", "HUMANEVA15_MRCNN", "humaneva15_from_coco17", "GraphUnit",
    "TemporalUnit", "AGCNBlock", "StridedModule", "JointHead",
    "mpjpe_loss", "target_pose", "glagcn_local_loss", "glagcn_global_loss", "glagcn_stage1_loss",
    "glagcn_stage2_loss", "GlobalNodeGCN", "GlobalNodeLayer", "kmeans_pose_labels",
    "global_node_loss",
]

"""Named skeleton layouts and their graphs.

Every layout carries its joint names, the parent of each joint (a tree; -1 marks the root), the
left/right joint lists (for flip augmentation), the edge list the graph partitions are built from,
and helpers that build the graphs the models need:

* :meth:`Skeleton.partitions` -- the K = 3 spatial partitions of GLA-GCN / 2s-AGCN, a
  (3, V, V) tensor applied on the right (``out[w] = sum_v x[v] A[v, w]``):

  - ``A[0]`` identity (not normalised);
  - ``A[1]`` "inward": ``M[b, a] = 1`` for every edge ``(a, b)`` (``a`` the child, ``b`` the
    parent), every column divided by its sum (all-zero columns stay zero);
  - ``A[2]`` "outward": ``M[a, b] = 1`` for every edge, column-normalised the same way.

* :meth:`Skeleton.normalized_adjacency` -- the row-normalised ``D^-1 (A + I)`` of the undirected
  skeleton graph (SemGCN / global-node GCN).

Layouts (:data:`SKELETONS`, :func:`get_skeleton`):

``"h36m17"``
    Human3.6M, 17 joints; root 0 (Hip). Edges ``(child, parent)`` from the parent list (the
    corrected released list, no hub at joint 16).
``"h36m16"``
    Human3.6M without Neck/Nose (index 9 of h36m17); root 0.
``"humaneva15"``
    HumanEva-I, 15 joints; root 0 (pelvis). The edge list is the released code's list verbatim,
    with its mixed directions (head->thorax and thorax->pelvis point to the root, the limb edges
    point away), so that released weights see the graph they were trained with.
``"mpi3dhp17"``
    MPI-INF-3DHP, the standard 17-joint test layout (MPI order), root 14 (pelvis).
``"coco17"``
    The COCO keypoint order (detector output). The edges are COCO's 19 usual skeleton links: a
    spanning tree rooted at the nose (nose -> eyes -> ears -> shoulders -> hips / elbows, ...)
    written ``(child, parent)``, plus the three cross links (right eye - left eye, right shoulder -
    left shoulder, right hip - left hip) written ``(right, left)``. COCO has no anatomical root;
    the nose is used as the tree root, which only matters for :attr:`Skeleton.parents`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

__all__ = ["Skeleton", "SKELETONS", "get_skeleton", "skeleton_names", "flip_permutation"]


def flip_permutation(num_joints: int, left, right) -> list[int]:
    """The joint permutation that exchanges ``left[i]`` and ``right[i]`` (horizontal flips of
    poses: :meth:`Skeleton.flip_permutation`, :func:`posekernels.data.flip_pose`). ValueError
    when the lists differ in length or name a joint outside ``range(num_joints)``."""
    if len(left) != len(right):
        raise ValueError("left and right joint lists differ in length")
    perm = list(range(num_joints))
    for a, b in zip(left, right):
        if not (0 <= a < num_joints and 0 <= b < num_joints):
            raise ValueError(f"left/right joint index out of range for {num_joints} joints")
        perm[a], perm[b] = b, a
    return perm


@dataclass(frozen=True)
class Skeleton:
    """A named joint layout with a tree (``parents``) and a graph (``edges``).

    ``edges`` holds ``(a, b)`` pairs, read as ``(child, parent)`` by :meth:`partitions`; for a
    plain tree it is ``[(j, parents[j]) for every non-root j]``.
    """

    name: str
    joint_names: tuple[str, ...]
    parents: tuple[int, ...]
    left: tuple[int, ...]
    right: tuple[int, ...]
    edges: tuple[tuple[int, int], ...] = field(default=())

    def __post_init__(self):
        v = len(self.joint_names)
        if len(self.parents) != v:
            raise ValueError(f"skeleton {self.name!r}: {len(self.parents)} parents for {v} joints")
        roots = [j for j, p in enumerate(self.parents) if p == -1]
        if len(roots) != 1:
            raise ValueError(f"skeleton {self.name!r}: exactly one root (parent -1) expected, "
                             f"got {roots}")
        for j, p in enumerate(self.parents):
            if p != -1 and not 0 <= p < v:
                raise ValueError(f"skeleton {self.name!r}: parent {p} of joint {j} out of range")
        for j in range(v):  # every joint must reach the root without a cycle
            seen, k = set(), j
            while k != -1:
                if k in seen:
                    raise ValueError(f"skeleton {self.name!r}: the parent list has a cycle at {k}")
                seen.add(k)
                k = self.parents[k]
        if len(self.left) != len(self.right) or set(self.left) & set(self.right):
            raise ValueError(f"skeleton {self.name!r}: left and right must be disjoint lists of "
                             "equal length")
        for j in (*self.left, *self.right):
            if not 0 <= j < v:
                raise ValueError(f"skeleton {self.name!r}: left/right joint {j} out of range")
        if not self.edges:
            object.__setattr__(self, "edges", tuple((j, p) for j, p in enumerate(self.parents)
                                                    if p != -1))
        for a, b in self.edges:
            if not (0 <= a < v and 0 <= b < v) or a == b:
                raise ValueError(f"skeleton {self.name!r}: bad edge {(a, b)}")

    # ------------------------------------------------------------------ basic properties
    @property
    def num_joints(self) -> int:
        return len(self.joint_names)

    @property
    def root(self) -> int:
        return self.parents.index(-1)

    def __len__(self) -> int:
        return self.num_joints

    def flip_permutation(self) -> list[int]:
        """Joint permutation that swaps left and right (for horizontal-flip augmentation)."""
        return flip_permutation(self.num_joints, self.left, self.right)

    def bones(self) -> list[tuple[int, int]]:
        """The tree's ``(child, parent)`` pairs (anatomical bones)."""
        return [(j, p) for j, p in enumerate(self.parents) if p != -1]

    # ------------------------------------------------------------------ graphs
    def _edge_matrix(self, inward: bool, dtype) -> torch.Tensor:
        v = self.num_joints
        m = torch.zeros(v, v, dtype=dtype)
        for a, b in self.edges:
            if inward:
                m[b, a] = 1.0
            else:
                m[a, b] = 1.0
        return m

    @staticmethod
    def _column_normalise(m: torch.Tensor) -> torch.Tensor:
        col = m.sum(dim=0, keepdim=True)
        return torch.where(col > 0, m / col.clamp_min(1e-30), torch.zeros_like(m))

    def partitions(self, dtype: torch.dtype = torch.float32,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """The (K = 3, V, V) partition tensor A: identity, inward, outward (column-normalised).

        Applied on the right: a feature row x over joints becomes ``x @ A[k]``.
        """
        v = self.num_joints
        eye = torch.eye(v, dtype=torch.float64)
        inward = self._column_normalise(self._edge_matrix(True, torch.float64))
        outward = self._column_normalise(self._edge_matrix(False, torch.float64))
        return torch.stack([eye, inward, outward]).to(dtype=dtype, device=device)

    # alias used by the models
    adjacency_partitions = partitions

    def adjacency(self, self_loops: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Symmetric 0/1 adjacency (V, V) of the undirected edge graph, optionally with I."""
        m = self._edge_matrix(True, torch.float64)
        m = ((m + m.t()) > 0).to(torch.float64)
        if self_loops:
            m = m + torch.eye(self.num_joints, dtype=torch.float64)
        return m.to(dtype)

    def normalized_adjacency(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Row-normalised ``a = D^-1 (A + I)`` (V, V): ``a[i, j]`` weights joint j in joint i's update."""
        m = self.adjacency(self_loops=True, dtype=torch.float64)
        return (m / m.sum(dim=1, keepdim=True)).to(dtype)


def _tree_edges(parents):
    return tuple((j, p) for j, p in enumerate(parents) if p != -1)


_H36M17_NAMES = ("Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax",
                 "Neck/Nose", "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow",
                 "RWrist")
_H36M17_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)

_H36M16_NAMES = tuple(n for i, n in enumerate(_H36M17_NAMES) if i != 9)
_H36M16_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 8, 10, 11, 8, 13, 14)

_HUMANEVA_NAMES = ("Pelvis", "Thorax", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow",
                   "RWrist", "LHip", "LKnee", "LAnkle", "RHip", "RKnee", "RAnkle", "Head")
_HUMANEVA_PARENTS = (-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1)
# the released code's list, verbatim (0-based), mixed directions included
_HUMANEVA_EDGES = ((14, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 0), (0, 11),
                   (11, 12), (12, 13), (0, 8), (8, 9), (9, 10))

_MPI_NAMES = ("HeadTop", "Neck", "RShoulder", "RElbow", "RWrist", "LShoulder", "LElbow", "LWrist",
              "RHip", "RKnee", "RAnkle", "LHip", "LKnee", "LAnkle", "Pelvis", "Spine", "Head")
_MPI_PARENTS = (16, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1)

_COCO_NAMES = ("Nose", "LEye", "REye", "LEar", "REar", "LShoulder", "RShoulder", "LElbow",
               "RElbow", "LWrist", "RWrist", "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle")
_COCO_PARENTS = (-1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)
_COCO_EDGES = _tree_edges(_COCO_PARENTS) + ((2, 1), (6, 5), (12, 11))

SKELETONS: dict[str, Skeleton] = {
    "h36m17": Skeleton("h36m17", _H36M17_NAMES, _H36M17_PARENTS,
                       left=(4, 5, 6, 11, 12, 13), right=(1, 2, 3, 14, 15, 16)),
    "h36m16": Skeleton("h36m16", _H36M16_NAMES, _H36M16_PARENTS,
                       left=(4, 5, 6, 10, 11, 12), right=(1, 2, 3, 13, 14, 15)),
    "humaneva15": Skeleton("humaneva15", _HUMANEVA_NAMES, _HUMANEVA_PARENTS,
                           left=(2, 3, 4, 8, 9, 10), right=(5, 6, 7, 11, 12, 13),
                           edges=_HUMANEVA_EDGES),
    "mpi3dhp17": Skeleton("mpi3dhp17", _MPI_NAMES, _MPI_PARENTS,
                          left=(5, 6, 7, 11, 12, 13), right=(2, 3, 4, 8, 9, 10)),
    "coco17": Skeleton("coco17", _COCO_NAMES, _COCO_PARENTS,
                       left=(1, 3, 5, 7, 9, 11, 13, 15), right=(2, 4, 6, 8, 10, 12, 14, 16),
                       edges=_COCO_EDGES),
}


def skeleton_names() -> list[str]:
    return list(SKELETONS)


def get_skeleton(skeleton: str | Skeleton) -> Skeleton:
    """The :class:`Skeleton` named ``skeleton`` (a Skeleton passes through unchanged)."""
    if isinstance(skeleton, Skeleton):
        return skeleton
    if not isinstance(skeleton, str) or skeleton not in SKELETONS:
        raise ValueError(f"unknown skeleton {skeleton!r}; expected one of {list(SKELETONS)} "
                         "or a posekernels.skeletons.Skeleton")
    return SKELETONS[skeleton]

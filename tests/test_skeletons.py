"""Skeleton layouts and their partition graphs, checked against independent constructions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posekernels.skeletons import SKELETONS, Skeleton, get_skeleton

ALL = ["h36m17", "h36m16", "humaneva15", "mpi3dhp17", "coco17"]


def _partitions_oracle(edges, v):
    """Identity, inward, outward; columns divided by their sums (written from the description)."""
    eye = np.eye(v)
    inward = np.zeros((v, v))
    outward = np.zeros((v, v))
    for child, parent in edges:
        inward[parent, child] = 1.0
        outward[child, parent] = 1.0
    out = [eye]
    for m in (inward, outward):
        res = np.zeros_like(m)
        for w in range(v):
            s = m[:, w].sum()
            if s > 0:
                res[:, w] = m[:, w] / s
        out.append(res)
    return np.stack(out)


def test_registry_and_lookup():
    assert set(ALL) <= set(SKELETONS)
    assert get_skeleton("h36m17") is SKELETONS["h36m17"]
    sk = SKELETONS["h36m16"]
    assert get_skeleton(sk) is sk
    with pytest.raises(ValueError, match="unknown skeleton 'h36m18'"):
        get_skeleton("h36m18")


@pytest.mark.parametrize("name", ALL)
def test_basic_consistency(name):
    sk = SKELETONS[name]
    v = sk.num_joints
    assert len(sk) == v == len(sk.parents)
    assert len(set(sk.joint_names)) == v
    perm = sk.flip_permutation()
    assert sorted(perm) == list(range(v))
    assert [perm[p] for p in perm] == list(range(v))  # an involution
    for a, b in zip(sk.left, sk.right):
        assert perm[a] == b and perm[b] == a
    # left/right names mirror each other
    for a, b in zip(sk.left, sk.right):
        assert sk.joint_names[a].replace("L", "", 1) == sk.joint_names[b].replace("R", "", 1)


def test_h36m17_layout():
    sk = SKELETONS["h36m17"]
    assert sk.num_joints == 17 and sk.root == 0
    assert list(sk.parents) == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15]
    assert list(sk.left) == [4, 5, 6, 11, 12, 13] and list(sk.right) == [1, 2, 3, 14, 15, 16]
    assert sk.joint_names[9] == "Neck/Nose" and sk.joint_names[8] == "Thorax"
    assert sorted(sk.edges) == sorted((j, p) for j, p in enumerate(sk.parents) if p >= 0)
    # the corrected list: joint 16 (RWrist) is not a hub
    assert sum(16 in e for e in sk.edges) == 1


def test_h36m16_is_h36m17_without_neck():
    full, sk = SKELETONS["h36m17"], SKELETONS["h36m16"]
    keep = [j for j in range(17) if j != 9]
    assert sk.num_joints == 16
    assert list(sk.joint_names) == [full.joint_names[j] for j in keep]
    new_index = {old: new for new, old in enumerate(keep)}
    expected_parents = []
    for old in keep:
        p = full.parents[old]
        if p == 9:  # the head hangs from the thorax once the neck is gone
            p = full.parents[9]
        expected_parents.append(-1 if p == -1 else new_index[p])
    assert list(sk.parents) == expected_parents
    assert list(sk.parents) == [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 8, 10, 11, 8, 13, 14]
    assert [keep[j] for j in sk.left] == list(full.left)
    assert [keep[j] for j in sk.right] == list(full.right)


def test_humaneva_edges_verbatim():
    sk = SKELETONS["humaneva15"]
    assert sk.num_joints == 15 and sk.root == 0
    assert list(sk.edges) == [(14, 1), (1, 2), (2, 3), (3, 4), (1, 5), (5, 6), (6, 7), (1, 0),
                              (0, 11), (11, 12), (12, 13), (0, 8), (8, 9), (9, 10)]
    assert list(sk.parents) == [-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1]
    assert list(sk.left) == [2, 3, 4, 8, 9, 10] and list(sk.right) == [5, 6, 7, 11, 12, 13]
    # the mixed directions change the partitions: thorax (1) is the "child" of 3 edges
    A = sk.partitions(torch.float64)
    np.testing.assert_allclose(A[1][:, 1].numpy(), np.eye(15)[[0, 2, 5]].sum(0) / 3)
    # ... and the same undirected graph as the tree
    und = {frozenset(e) for e in sk.edges}
    assert und == {frozenset(e) for e in sk.bones()}


def test_mpi3dhp_layout():
    sk = SKELETONS["mpi3dhp17"]
    assert sk.num_joints == 17 and sk.root == 14
    assert list(sk.left) == [5, 6, 7, 11, 12, 13] and list(sk.right) == [2, 3, 4, 8, 9, 10]
    assert list(sk.parents) == [16, 15, 1, 2, 3, 1, 5, 6, 14, 8, 9, 14, 11, 12, -1, 14, 1]
    assert sk.joint_names[14] == "Pelvis" and sk.joint_names[0] == "HeadTop"


def test_coco_layout():
    sk = SKELETONS["coco17"]
    assert list(sk.joint_names[:5]) == ["Nose", "LEye", "REye", "LEar", "REar"]
    assert list(sk.joint_names[15:]) == ["LAnkle", "RAnkle"]
    # COCO's usual skeleton links (1-based, as published with the keypoint annotations)
    coco_links = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7],
                  [6, 8], [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5],
                  [4, 6], [5, 7]]
    assert {frozenset(e) for e in sk.edges} == {frozenset((a - 1, b - 1)) for a, b in coco_links}
    assert len(sk.edges) == 19
    assert {frozenset(b) for b in sk.bones()} <= {frozenset(e) for e in sk.edges}


@pytest.mark.parametrize("name", ALL)
def test_partitions_match_oracle(name):
    sk = SKELETONS[name]
    A = sk.partitions(torch.float64)
    assert A.shape == (3, sk.num_joints, sk.num_joints) and A.dtype == torch.float64
    np.testing.assert_allclose(A.numpy(), _partitions_oracle(sk.edges, sk.num_joints), atol=1e-15)
    # every column of A_1 / A_2 sums to 1 or 0
    for k in (1, 2):
        sums = A[k].sum(0)
        assert torch.all((sums - 1).abs().lt(1e-12) | sums.eq(0))
    assert sk.partitions().dtype == torch.float32


def test_h36m17_partition_values():
    A = SKELETONS["h36m17"].partitions(torch.float64)
    assert torch.equal(A[0], torch.eye(17, dtype=torch.float64))
    # inward: column of every child holds a single 1 at its parent; the root's column is empty
    assert A[1][0, 1] == 1 and A[1][8, 14] == 1 and A[1][:, 0].sum() == 0
    # outward: root (0) and thorax (8) have three children each
    for child in (1, 4, 7):
        assert A[2][child, 0] == pytest.approx(1 / 3)
    for child in (9, 11, 14):
        assert A[2][child, 8] == pytest.approx(1 / 3)
    assert A[2][10, 9] == 1.0  # the neck has one child
    assert A[2][:, 16].sum() == 0  # a leaf


@pytest.mark.parametrize("name", ALL)
def test_normalized_adjacency(name):
    sk = SKELETONS[name]
    a = sk.normalized_adjacency(torch.float64)
    v = sk.num_joints
    ones = np.eye(v)
    for x, y in sk.edges:
        ones[x, y] = ones[y, x] = 1
    np.testing.assert_allclose(a.numpy(), ones / ones.sum(1, keepdims=True), atol=1e-15)
    np.testing.assert_allclose(a.sum(1).numpy(), np.ones(v), atol=1e-12)


def test_bad_skeletons_are_rejected():
    with pytest.raises(ValueError, match="exactly one root"):
        Skeleton("x", ("a", "b"), (-1, -1), (), ())
    with pytest.raises(ValueError, match="cycle"):
        Skeleton("x", ("a", "b", "c"), (-1, 2, 1), (), ())
    with pytest.raises(ValueError, match="disjoint"):
        Skeleton("x", ("a", "b", "c"), (-1, 0, 0), (1,), (1,))
    with pytest.raises(ValueError, match="bad edge"):
        Skeleton("x", ("a", "b"), (-1, 0), (), (), edges=((0, 5),))

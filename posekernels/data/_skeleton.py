"""Private skeleton facts the data pipeline needs (Human3.6M 17, HumanEva 15, 3DHP 17).

The project's public skeleton definitions live in ``posekernels.skeletons``; these constants are
kept here so that :mod:`posekernels.data` does not depend on it (a test checks they agree). All
indices are 0-based.
"""
from __future__ import annotations

H36M17_NAMES = (
    "Hip", "RHip", "RKnee", "RFoot", "LHip", "LKnee", "LFoot", "Spine", "Thorax", "Neck/Nose",
    "Head", "LShoulder", "LElbow", "LWrist", "RShoulder", "RElbow", "RWrist",
)
H36M17_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M17_LEFT = (4, 5, 6, 11, 12, 13)
H36M17_RIGHT = (1, 2, 3, 14, 15, 16)
H36M17_ROOT = 0

HUMANEVA15_PARENTS = (-1, 0, 1, 2, 3, 1, 5, 6, 0, 8, 9, 0, 11, 12, 1)
HUMANEVA15_LEFT = (2, 3, 4, 8, 9, 10)
HUMANEVA15_RIGHT = (5, 6, 7, 11, 12, 13)
HUMANEVA15_ROOT = 0

MPI3DHP17_LEFT = (5, 6, 7, 11, 12, 13)
MPI3DHP17_RIGHT = (2, 3, 4, 8, 9, 10)
MPI3DHP17_ROOT = 14

"""Data for 3D pose lifting: dataset files, cameras, BVH import, virtual cameras, windows.

Modules
-------
* :mod:`~posekernels.data.formats`: VideoPose3D 3D/2D npz readers and writers (Human3.6M,
  HumanEva-I, CMU imports) and the P-STMO MPI-INF-3DHP npz reader. These files hold pickled
  dicts; their object arrays are read by a restricted unpickler (containers and numpy arrays
  only), so a crafted file is refused with an error naming it and no code from it runs.
* :mod:`~posekernels.data.splits`: standard subject splits, action lists, image sizes, the
  Human3.6M 32 -> 17 joint selection.
* :mod:`~posekernels.data.cameras`: camera model (intrinsics, radial/tangential distortion,
  quaternion + translation extrinsics), world <-> camera, projection, screen normalisation.
* :mod:`~posekernels.data.bvh`: BVH parser, forward kinematics, import to Human3.6M 17 joints in
  metres (Z-up world), resampling, T-pose / zero-frame removal, glitch flags; BVH files of
  folders and their (subject, action) names; :mod:`~posekernels.data.bvh_writer`: h36m17 poses
  written as BVH with joint rotations (for animation tools).
* :mod:`~posekernels.data.virtual`: the default virtual camera rig and detector-like 2D noise.
* :mod:`~posekernels.data.random_cameras`: random cameras (a fresh one per training window,
  vectorised on the device) and the seeded evaluation cameras of ``evaluate --cameras random``.
* :mod:`~posekernels.data.windows`: :class:`WindowDataset`, on-device window gathering with
  replicate padding, causal windows and flip augmentation.
* :mod:`~posekernels.data.io`: atomic file writes, the restricted npz reader, pose-array checks
  (used for every file posekernels reads or writes).

Joint layouts (left/right lists for flips, parents) come from :mod:`posekernels.skeletons`.

Units: 3D positions in metres everywhere; 2D in pixels until normalised.
"""
from __future__ import annotations

from . import bvh, bvh_writer, cameras, formats, io, random_cameras, splits, virtual, windows
from .bvh import (CMU_H36M17_TABLE, CMU_UNIT_METRES, Bvh, BvhImport, bvh_sequence_name,
                  find_bvh_files, find_glitches, forward_kinematics, import_bvh, parse_bvh,
                  read_bvh)
from .bvh_writer import poses_to_bvh, save_bvh
from .cameras import (Camera, camera_to_world, image_coordinates, load_cameras_json,
                      look_at_camera, normalize_screen_coordinates, project_to_2d,
                      save_cameras_json, undistort_points, world_to_camera)
from .formats import (PoseSequence, h36m_metadata, load_3dhp, load_h36m_2d, load_h36m_3d,
                      load_humaneva_2d, load_humaneva_3d, load_positions_2d, load_positions_3d,
                      pair_sequences, save_positions_2d, save_positions_3d)
from .splits import (H36M_32_TO_17, H36M_ACTIONS, H36M_TEST_SUBJECTS, H36M_TRAIN_SUBJECTS,
                     HUMANEVA_ACTIONS, HUMANEVA_EVAL_ACTIONS, HUMANEVA_TEST_SUBJECTS,
                     HUMANEVA_TRAIN_SUBJECTS, canonical_action)
from .virtual import (DEFAULT_RIG, DetectorNoise, RigSpec, default_rig,
                      positions_2d_from_sequences, project_sequences)
from .windows import WindowDataset, flip_pose

__all__ = [
    "bvh", "bvh_writer", "cameras", "formats", "io", "random_cameras", "splits", "virtual", "windows",
    "CMU_H36M17_TABLE", "CMU_UNIT_METRES", "Bvh", "BvhImport", "bvh_sequence_name",
    "find_bvh_files", "find_glitches", "forward_kinematics", "import_bvh", "parse_bvh",
    "read_bvh", "poses_to_bvh", "save_bvh",
    "Camera", "camera_to_world", "image_coordinates", "load_cameras_json", "look_at_camera",
    "normalize_screen_coordinates", "project_to_2d", "save_cameras_json", "undistort_points",
    "world_to_camera",
    "PoseSequence", "h36m_metadata", "load_3dhp", "load_h36m_2d", "load_h36m_3d",
    "load_humaneva_2d", "load_humaneva_3d", "load_positions_2d", "load_positions_3d",
    "pair_sequences", "save_positions_2d", "save_positions_3d",
    "H36M_32_TO_17", "H36M_ACTIONS", "H36M_TEST_SUBJECTS", "H36M_TRAIN_SUBJECTS",
    "HUMANEVA_ACTIONS", "HUMANEVA_EVAL_ACTIONS", "HUMANEVA_TEST_SUBJECTS",
    "HUMANEVA_TRAIN_SUBJECTS", "canonical_action",
    "DEFAULT_RIG", "DetectorNoise", "RigSpec", "default_rig", "positions_2d_from_sequences",
    "project_sequences", "WindowDataset", "flip_pose",
]

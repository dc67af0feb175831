"""Train and compare lifting models on the real CMU motion capture (CPU-sized configurations).

    python benchmarks/train_cmu.py                      # convert, train every run, write the table
    python benchmarks/train_cmu.py --runs gla_full      # only some runs (comma-separated)
    python benchmarks/train_cmu.py --table-only         # rebuild the table from finished runs
    python benchmarks/train_cmu.py --table-only --ship  # ... and install the default_centered and
                                                        # default_causal runs (--ship-runs) as
                                                        # the package's default lifters

Reads the BVH files in ``../shared/data/cmu-mocap`` (relative to the repository root; ``--cmu``
overrides), converts them with ``posekernels import-bvh`` (50 Hz, glitch repair) into
``out/cmu/data_3d_cmu.npz`` (git-ignored; never committed), and trains each run with
``posekernels train --config out/cmu/<run>/config.json``. Subjects 01, 02, 05, 06 and 07 train,
subject 09 validates; 2D inputs are the ground-truth projections through the default virtual
rig (4 cameras). Every run uses seed 0, one CPU thread and the same data and epochs within a
comparison. The table (validation MPJPE / P-MPJPE with test-time flip, mean over actions, mm)
goes to ``out/cmu/results.md`` and ``out/cmu/results.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

SUBJECTS = ("01", "02", "05", "06", "07", "09")
VAL = ["09"]

# Common settings. The CPU budget allows about a thousand optimiser steps per model, so batches
# are small (more updates for the same samples). GLA-GCN runs follow the released recipe (Ranger,
# cosine lr 0.01 -> 1e-5, BN momentum decay, flip augmentation, test-time flip, two stages for
# the full model); the global-node runs use Adam with a cosine schedule from 5e-3 (the paper's
# 1e-3 is meant for ~300k steps) and no BN momentum decay (not part of their recipe).
GLA = dict(epochs=6, batch_size=32, frame_stride=32, optimizer="ranger", lr=0.01, lr_min=1e-5,
           lr_schedule="cosine", bn_momentum_decay=True, val_every=0)
GN = dict(epochs=6, batch_size=64, frame_stride=16, optimizer="adam", lr=5e-3, lr_min=1e-5,
          lr_schedule="cosine", bn_momentum_decay=False, val_every=0)

# The shipped default lifters: camera-randomised training (a fresh random camera per sample per
# step, posekernels.data.random_cameras), detector-like 2D noise and missing joints, subject scale
# jitter, random flip (an epoch is one pass over the frames, each in one orientation: half the
# released code's steps per epoch), Adam with a cosine schedule; validated through random
# evaluation cameras with detector noise. The shipped runs were trained in legs, each resumed
# from last.pt with a new epoch count (the cosine schedule is recomputed on resume, so each
# change restarted it part-way): 16 epochs cut to 13, then 33 (epochs 14-16), then 29 (17-29, with
# the fused training epilogues); a fresh run with epochs=29 follows one cosine instead.
LIVE = dict(epochs=29, batch_size=64, frame_stride=1, optimizer="adam", lr=2e-3, lr_min=1e-5,
            lr_schedule="cosine", bn_momentum_decay=True, val_every=2, cameras="random",
            augment_2d=True, scale_jitter=0.1, detector_noise=True, val_cameras="random",
            val_num_cameras=4)

# the T = 81 lifters trained from the start with every clip drawn alike and track starts (12
# epochs, one cosine; the centred one window-normalised)
BAL81 = {mode: dict(LIVE, epochs=12, bone_jitter=0.1, speed_range=[0.8, 2.0], track_start=0.2,
                    sample_balance=1.0, ema_decay=0.999,
                    model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                           "sequence_branch": False, "head": "shared", "causal": mode == "causal",
                           "window_norm": mode == "centered"})
         for mode in ("centered", "causal")}

# one user's camera (the README's "How well on your own camera"), as CameraDistribution ranges
MY_CAMERA = {"image_sizes": [[1920, 1080]], "hfov_deg": [68.9, 68.9], "height": [2.2, 2.2],
             "distance": [2.5, 5.0]}

# a wider training camera distribution than the default CameraDistribution (2-9 m, 40-90 deg)
WIDE_CAMERAS = {"distance": [2.0, 15.0], "hfov_deg": [20.0, 110.0]}

# cameras mounted anywhere from the floor to a ceiling corner (0-5 m up; the default is 0.3-3 m)
# and held less level (roll within +-15 degrees; the default +-5)
MOUNT_CAMERAS = {"height": [0.0, 5.0], "roll_deg": [-15.0, 15.0]}

# four-epoch probes of the training recipe (T = 27, C = 32, centred, window-normalised input,
# the LIVE recipe with every clip drawn alike: probe_bal100), held out on subject 09 and, as
# name_v02, on subject 02 (trained on the other five)
PROBE_MODEL = {"arch": "glagcn", "receptive_field": 27, "channels": 32, "sequence_branch": False,
               "head": "shared", "causal": False, "window_norm": True}
HELD_OUT_02 = {"val_subjects": ["02"], "train_subjects": ["01", "05", "06", "07", "09"]}


def _probes(name: str, **changes) -> dict:
    """``name`` (held out 09) and ``name``_v02 (held out 02): probe_bal100's recipe with
    ``changes``."""
    return {f"{name}{'_v02' if v02 else ''}": dict(
        LIVE, **{"epochs": 4, "sample_balance": 1.0, **changes, **(HELD_OUT_02 if v02 else {})},
        model=dict(PROBE_MODEL)) for v02 in (False, True)}


RUNS = {
    "default_centered": dict(LIVE, model={"arch": "glagcn", "receptive_field": 27,
                                          "channels": 48, "sequence_branch": False,
                                          "head": "shared", "causal": False}),
    "default_causal": dict(LIVE, model={"arch": "glagcn", "receptive_field": 27, "channels": 48,
                                        "sequence_branch": False, "head": "shared",
                                        "causal": True}),
    # the next budget for the default lifters: a wider network over a longer window, trained
    # from the start (about five times the step cost of the C = 48, T = 27 runs: ~18 min per
    # epoch on one thread of the 2-core CPU), with bone-length jitter (other body proportions)
    # switched on after epoch 4 (centred) and epoch 3 (causal) of the 12, and playback-speed
    # jitter (cameras at 25-62 fps) after epoch 6 (centred) and epoch 5 (causal)
    "big_centered": dict(LIVE, epochs=12, bone_jitter=0.1, speed_range=[0.8, 2.0],
                         model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                "sequence_branch": False, "head": "shared", "causal": False}),
    "big_causal": dict(LIVE, epochs=12, bone_jitter=0.1, speed_range=[0.8, 2.0],
                       model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                              "sequence_branch": False, "head": "shared", "causal": True}),
    # what the causal lifter gains from GLA-GCN's own additions (the sequence branch and its
    # two-stage loss, the individually connected head): big_causal's recipe from the start;
    # float32 for its first four epochs and 437 batches, then resumed under CPU bf16 autocast
    # (amp_cpu) once the graph op ran its weight products in bf16 there (1.15x on the autocast
    # step; benchmarks/RESULTS.md)
    "big_causal_seq": dict(LIVE, epochs=12, bone_jitter=0.1, speed_range=[0.8, 2.0],
                           amp_cpu=True,
                           model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                  "sequence_branch": True, "head": "icl", "causal": True}),
    # the same additions for the centred lifter, under CPU bf16 autocast (amp_cpu: level in
    # accuracy with float32 at equal steps in the T = 27 probe, 1.17x faster steps at this size;
    # benchmarks/RESULTS.md)
    "big_centered_seq": dict(LIVE, epochs=12, bone_jitter=0.1, speed_range=[0.8, 2.0],
                             amp_cpu=True,
                             model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                    "sequence_branch": True, "head": "icl", "causal": False}),
    # window-normalised input (GLAGCN(window_norm=True): the pose scaled to its own size and
    # centred, plus the root's screen position), started from the shipped T = 81 lifters
    # (init_from: their input layers widened, the added channels at zero) and trained on with
    # the big runs' recipe at a lower learning rate
    "win_centered": dict(LIVE, epochs=4, lr=1e-3, bone_jitter=0.1, speed_range=[0.8, 2.0],
                         init_from="default:centered",
                         model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                "sequence_branch": False, "head": "shared", "causal": False,
                                "window_norm": True}),
    "win_causal": dict(LIVE, epochs=4, lr=1e-3, bone_jitter=0.1, speed_range=[0.8, 2.0],
                       init_from="default:causal",
                       model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                              "sequence_branch": False, "head": "shared", "causal": True,
                              "window_norm": True}),
    # the causal lifter started from the shipped centred one (window-normalised, T = 81, C = 64):
    # the T = 81 form of probe_causal_from_centred; not trained: that probe was level with its
    # equal-budget control (benchmarks/RESULTS.md)
    "win_causal_from_centred": dict(LIVE, epochs=4, lr=1e-3, bone_jitter=0.1,
                                    speed_range=[0.8, 2.0], init_from="default:centered",
                                    model={"arch": "glagcn", "receptive_field": 81,
                                           "channels": 64, "sequence_branch": False,
                                           "head": "shared", "causal": True,
                                           "window_norm": True}),
    # the shipped causal lifter (big_causal, as shipped at commit 5a5a91d) fine-tuned two epochs
    # at a low rate with tracks that begin inside the window (track_start) and without (the
    # control: the extra steps and the repeated 2D of padded slots alone); ft_causal_track was
    # shipped in its place, so "default:causal" now names ft_causal_track itself
    **{f"ft_causal_{name}": dict(LIVE, epochs=2, lr=3e-4, bone_jitter=0.1,
                                 speed_range=[0.8, 2.0], track_start=p,
                                 init_from="default:causal",
                                 model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                        "sequence_branch": False, "head": "shared",
                                        "causal": True})
       for name, p in (("repeat", 0.0), ("track", 0.2))},
    # a wider centred lifter with the window-normalised input from the start (float32; bone and
    # speed jitter from the first epoch): the shipped centred lifter is C = 64 trained 12 + 4
    # epochs (screen input, then window-normalised); this one trains 16 epochs in one cosine
    "wide_centered": dict(LIVE, epochs=16, bone_jitter=0.1, speed_range=[0.8, 2.0],
                          model={"arch": "glagcn", "receptive_field": 81, "channels": 96,
                                 "sequence_branch": False, "head": "shared", "causal": False,
                                 "window_norm": True}),
    # the shipped lifters fine-tuned with every clip drawn alike (sample_balance 1, the probes
    # probe_bal*), three epochs at lr 5e-4, with track starts in 20 % of the windows (the
    # shipped causal lifter was trained with them; the centred one gets them here)
    **{f"bal_{mode}": dict(LIVE, epochs=3, lr=5e-4, bone_jitter=0.1, speed_range=[0.8, 2.0],
                           track_start=0.2, sample_balance=1.0, init_from=f"default:{mode}",
                           model={"arch": "glagcn", "receptive_field": 81, "channels": 64,
                                  "sequence_branch": False, "head": "shared",
                                  "causal": mode == "causal", "window_norm": mode == "centered"})
       for mode in ("centered", "causal")},
    # BAL81 (above): whether the clip balance gives more from the first step than as a
    # fine-tune (bal_*); a moving average of the weights (ema_decay 0.999, about 1.5 epochs)
    # kept from epoch 3 on (centred) and from batch 324 of epoch 1 (causal), added on
    # 2026-12-02 (it does not change the training trajectory; validation reads the average from
    # then on, last.pt keeps the last weights too)
    **{f"bal81_{mode}": recipe for mode, recipe in BAL81.items()},
    # bal81_* again from the start under CPU bf16 autocast (amp_cpu) with two threads, one run
    # after the other (about 5 min per epoch instead of ~20 for one thread beside the other run;
    # the average kept from the first step): the bal81 runs' last.pt files were lost with their
    # machine on 2026-12-02 before epoch 7. The shipped lifters are their mount_ fine-tunes
    **{f"bal81a_{mode}": dict(BAL81[mode], amp_cpu=True) for mode in ("centered", "causal")},
    # the bal81a lifters trained on with half the windows' 2D made as a COCO detector and
    # posekernels.adapters make it (detector_joints: the nose for the neck/nose joint, the
    # shoulders' midpoint for the thorax, ...; the targets stay the mocap joints), so that a
    # live pipeline's inputs are ones the lifter was trained on: the centred one (converged)
    # two epochs at lr 3e-4, the causal one (still gaining at epoch 12) six at 5e-4
    **{f"det_{mode}": dict(BAL81[mode], amp_cpu=True, epochs=epochs, lr=lr, detector_joints=0.5,
                           init_from=f"run:bal81a_{mode}")
       for mode, epochs, lr in (("centered", 2, 3e-4), ("causal", 6, 5e-4))},
    # the shipped lifters tuned to one camera that a user knows (the README's: 1080p, 68.9
    # degree horizontal field of view, 2.2 m high; people 2.5-5 m from it, any azimuth), two
    # epochs at lr 3e-4 on the training subjects' motion seen only through that camera
    **{f"cam_{mode}": dict(BAL81[mode], amp_cpu=True, epochs=2, lr=3e-4,
                           camera_distribution=MY_CAMERA, init_from=f"default:{mode}")
       for mode in ("centered", "causal")},
    # the shipped lifters fine-tuned two epochs with limb swings of other amplitudes
    # (limb_swing, see probe_swing) and, as the equal-step control, without
    **{f"{kind}_{mode}": dict(BAL81[mode], amp_cpu=True, epochs=2, lr=3e-4,
                              init_from=f"default:{mode}",
                              **({"limb_swing": [0.8, 1.6]} if kind == "swing" else {}))
       for kind in ("swing", "more") for mode in ("centered", "causal")},
    # the bal81a lifters fine-tuned two epochs with cameras mounted higher, lower and less
    # level (MOUNT_CAMERAS); more_{mode} is the equal-step control. Shipped since 2026-12-02
    # (the runs were started from default:{mode}, then the very weights of bal81a_{mode})
    **{f"mount_{mode}": dict(BAL81[mode], amp_cpu=True, epochs=2, lr=3e-4,
                             init_from=f"run:bal81a_{mode}", camera_distribution=MOUNT_CAMERAS)
       for mode in ("centered", "causal")},
    # a longer history for the causal lifter: bal81a_causal's recipe over 243 frames (4.9 s at
    # 50 Hz) at C = 48 (about 1.7x the T = 81, C = 64 step; the width changes too)
    "bal243_causal": dict(BAL81["causal"], amp_cpu=True,
                          model={"arch": "glagcn", "receptive_field": 243, "channels": 48,
                                 "sequence_branch": False, "head": "shared", "causal": True}),
    # four-epoch probes of the input representation (T = 27, C = 32, the LIVE recipe): screen
    # coordinates as they are against the window-normalised input, centred and causal
    **{f"probe_{inp}{'_causal' if causal else ''}": dict(
        LIVE, epochs=4, model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                               "sequence_branch": False, "head": "shared", "causal": causal,
                               "window_norm": inp == "window"})
       for inp in ("screen", "window") for causal in (False, True)},
    # a causal model started from a centred one's weights (the same network but for where its
    # temporal convolutions sit in time): probe_screen's final weights, then four epochs of
    # causal training at a fine-tuning rate; the equal-budget control is a causal probe trained
    # from scratch for the eight epochs that the two legs add up to
    "probe_causal_from_centred": dict(
        LIVE, epochs=4, lr=1e-3, init_from="run:probe_screen",
        model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
               "sequence_branch": False, "head": "shared", "causal": True}),
    "probe_screen_causal8": dict(
        LIVE, epochs=8, model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                               "sequence_branch": False, "head": "shared", "causal": True}),
    # tracks that begin inside the window (track_start: a new track's first frames, padded as
    # inference pads them; the cost measured on subject 09 before: 7 mm over a track's first
    # 10 frames) against the same probe without; both with the padded slots' 2D repeated
    # exactly (the trainer since 2026-12-02; probe_screen_causal drew fresh noise per slot)
    **{f"probe_{name}_causal": dict(
        LIVE, epochs=4, track_start=p,
        model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
               "sequence_branch": False, "head": "shared", "causal": True})
       for name, p in (("repeat", 0.0), ("track", 0.2))},
    # the centred screen-coordinate probe under CPU bf16 autocast (amp_cpu): what bf16
    # convolutions cost in accuracy at equal steps
    "probe_screen_amp": dict(LIVE, epochs=4, amp_cpu=True,
                             model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                                    "sequence_branch": False, "head": "shared",
                                    "causal": False}),
    # training frames drawn per clip (sample_balance 1: every clip alike, with replacement)
    # against one pass over the frames (0; subject 01's 14 climbing clips are half of them)
    **{k: v for b in (0.0, 0.5, 1.0)
       for k, v in _probes(f"probe_bal{int(b * 100)}", sample_balance=b).items()},
    # every bone turned by a random rotation per window (bone_rotation, degrees: poses the
    # recordings lack, e.g. other arm-swing planes)
    **{k: v for deg in (15, 30)
       for k, v in _probes(f"probe_rot{deg}", bone_rotation=float(deg)).items()},
    # limb swings of another amplitude (limb_swing: each limb bone's angle to its window-mean
    # direction scaled by a factor in [0.8, 1.6]; strides and arm swings towards running, which
    # the training subjects barely hold)
    **_probes("probe_swing", limb_swing=[0.8, 1.6]),
    # a wider camera distribution in training (2-15 m away, 20-110 degree fields of view:
    # CCTV far off, telephoto, phones' wide lenses); held out 09 only
    "probe_widecam": _probes("probe_widecam", camera_distribution=WIDE_CAMERAS)["probe_widecam"],
    # cameras from the floor to a ceiling corner, less level (MOUNT_CAMERAS)
    **_probes("probe_mount", camera_distribution=MOUNT_CAMERAS),
    # how the held-out error falls with the amount of training motion: a seeded fraction of
    # every training subject's clips (clip_fraction; at least one clip each), as many optimiser
    # steps as the whole set's four epochs (the epochs scaled by the frames kept; run_one)
    **{k: v for f in (0.125, 0.25, 0.5)
       for k, v in _probes(f"probe_data{int(f * 100)}", clip_fraction=f).items()},
    # fast motion drawn more often (motion_weight g: a frame's draw weight times (its joints'
    # speed / the mean) ** g)
    **{k: v for g in (1, 2)
       for k, v in _probes(f"probe_motion{g}", motion_weight=float(g)).items()},
    "gla_full": dict(GLA, model={"arch": "glagcn", "receptive_field": 27, "channels": 32,
                                 "sequence_branch": True, "head": "icl"}),
    "released": dict(GLA, model={"arch": "released_sagcn", "receptive_field": 27,
                                 "channels": 32}),
    "global_node": dict(GN, model={"arch": "global_node", "channels": 64, "skeleton": "h36m17",
                                   "global_node": True, "aux": "action", "num_classes": 50}),
    "gcn_baseline": dict(GN, model={"arch": "global_node", "channels": 64, "skeleton": "h36m17",
                                    "global_node": False, "aux": None}),
}
LABELS = {
    "big_centered": "Centred lifter (random cameras, 2D noise), T=81, C=64",
    "big_causal": "Causal lifter (random cameras, 2D noise), T=81, C=64",
    "big_causal_seq": "Causal lifter, sequence branch + ICL head, T=81, C=64",
    "big_centered_seq": "Centred lifter, sequence branch + ICL head, T=81, C=64, bf16 autocast",
    "win_centered": "Centred lifter, window-normalised input, from big_centered, T=81, C=64",
    "win_causal": "Causal lifter, window-normalised input, from big_causal, T=81, C=64",
    "wide_centered": "Centred lifter, window-normalised input from the start, T=81, C=96",
    "win_causal_from_centred": "Causal lifter from the shipped centred one (window-normalised), "
                               "T=81, C=64",
    **{f"probe_{inp}{'_causal' if causal else ''}":
       f"Probe: {'causal' if causal else 'centred'}, {inp} input, T=27, C=32, 4 epochs"
       for inp in ("screen", "window") for causal in (False, True)},
    "probe_screen_amp": "Probe: centred, screen input, T=27, C=32, 4 epochs, bf16 autocast",
    "probe_causal_from_centred": "Probe: causal from probe_screen's weights, T=27, C=32, 4 epochs",
    "probe_screen_causal8": "Probe: causal, screen input, T=27, C=32, 8 epochs",
    "ft_causal_repeat": "Causal lifter, shipped big_causal + 2 epochs at lr 3e-4, T=81, C=64",
    "ft_causal_track": "Causal lifter, shipped big_causal + 2 epochs, track starts in 20 %, T=81, C=64",
    "probe_repeat_causal": "Probe: causal, padded 2D repeated, T=27, C=32, 4 epochs",
    "probe_track_causal": "Probe: causal, track starts in 20 % of windows, T=27, C=32, 4 epochs",
    **{f"probe_bal{int(b * 100)}{'_v02' if v02 else ''}":
       f"Probe: centred, window input, sample_balance {b:g}, T=27, C=32, 4 epochs"
       f"{', validated on 02' if v02 else ''}"
       for b in (0.0, 0.5, 1.0) for v02 in (False, True)},
    **{f"probe_rot{deg}{'_v02' if v02 else ''}":
       f"Probe: centred, window input, clips alike, bones turned up to {deg} deg, T=27, C=32, "
       f"4 epochs{', validated on 02' if v02 else ''}"
       for deg in (15, 30) for v02 in (False, True)},
    **{f"probe_swing{'_v02' if v02 else ''}":
       f"Probe: centred, window input, clips alike, limb swing x0.8-1.6, T=27, C=32, 4 epochs"
       f"{', validated on 02' if v02 else ''}" for v02 in (False, True)},
    "probe_widecam": "Probe: centred, window input, clips alike, cameras 2-15 m and 20-110 deg, "
                     "T=27, C=32, 4 epochs",
    **{f"probe_mount{'_v02' if v02 else ''}":
       f"Probe: centred, window input, clips alike, cameras 0-5 m up, roll +-15 deg, T=27, C=32, "
       f"4 epochs{', validated on 02' if v02 else ''}" for v02 in (False, True)},
    "bal_centered": "Centred lifter, shipped + 3 epochs, clips drawn alike, track starts, "
                    "T=81, C=64",
    "bal_causal": "Causal lifter, shipped + 3 epochs, clips drawn alike, T=81, C=64",
    "bal81_centered": "Centred lifter, clips drawn alike from the start, window-normalised, "
                      "T=81, C=64",
    "bal81_causal": "Causal lifter, clips drawn alike from the start, T=81, C=64",
    "bal81a_centered": "Centred lifter, clips drawn alike from the start, window-normalised, "
                       "bf16 autocast, T=81, C=64",
    "bal81a_causal": "Causal lifter, clips drawn alike from the start, bf16 autocast, T=81, C=64",
    "bal243_causal": "Causal lifter, bal81a_causal's recipe, T=243, C=48",
    **{f"cam_{mode}": f"{'Centred' if mode == 'centered' else 'Causal'} lifter tuned to one "
                      "camera (1080p, 68.9 deg, 2.2 m high, 2.5-5 m away), T=81, C=64"
       for mode in ("centered", "causal")},
    **{f"det_{mode}": f"{'Centred' if mode == 'centered' else 'Causal'} lifter, bal81a_{mode} + "
       f"{epochs} epochs with a COCO detector's joints in half the windows, T=81, C=64"
       for mode, epochs in (("centered", 2), ("causal", 6))},
    **{f"{kind}_{mode}": f"{'Centred' if mode == 'centered' else 'Causal'} lifter, bal81a_{mode} "
       f"+ 2 epochs{' with limb swing x0.8-1.6' if kind == 'swing' else ''}, T=81, C=64"
       for kind in ("swing", "more") for mode in ("centered", "causal")},
    **{f"mount_{mode}": f"{'Centred' if mode == 'centered' else 'Causal'} lifter, bal81a_{mode} "
       "+ 2 epochs with cameras 0-5 m up, roll +-15 deg, T=81, C=64"
       for mode in ("centered", "causal")},
    "default_centered": "Default centred lifter (random cameras, 2D noise), T=27, C=48",
    "default_causal": "Default causal lifter (random cameras, 2D noise), T=27, C=48",
    "gla_full": "GLA-GCN full (sequence branch + ICL, two stages), T=27, C=32",
    "released": "Released-model configuration (S_AGCN, shared head), T=27, C=32",
    "global_node": "Global-node GCN (K-means labels, K=50), C=64",
    "gcn_baseline": "Baseline GCN (no global node), C=64",
}


def convert(cmu: str, out_npz: str) -> None:
    from posekernels.cli import main as cli

    if os.path.isfile(out_npz):
        return
    folders = [os.path.join(cmu, s) for s in SUBJECTS]
    for f in folders:
        if not os.path.isdir(f):
            raise SystemExit(f"{f}: CMU subject folder not found (pass --cmu)")
    t = time.perf_counter()
    rc = cli(["import-bvh", *folders, "--out", out_npz, "--fps", f"{FRAME_RATE:g}",
              "--repair-glitches", "--quiet"])
    if rc:
        raise SystemExit(f"import-bvh failed ({rc})")
    print(f"converted {len(folders)} subjects to {out_npz} in {time.perf_counter() - t:.0f} s")


def train_run(recipe: dict, run_dir: str, data: str, threads: int, seed: int,
              label: str) -> None:
    """Write ``recipe`` (plus data, seed, threads, output folder) as ``run_dir``/config.json and
    train it with ``posekernels train --resume auto`` (an interrupted run continues from its
    last.pt); the whole run's wall time goes to wall_seconds.txt."""
    from posekernels.cli import main as cli

    os.makedirs(run_dir, exist_ok=True)
    cfg = dict(recipe, data_3d=data, seed=seed, threads=threads, out_dir=run_dir, device="cpu",
               progress=False)
    cfg.setdefault("val_subjects", VAL)
    path = os.path.join(run_dir, "config.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=1)
    t = time.perf_counter()
    rc = cli(["train", "--config", path, "--resume", "auto"])
    if rc:
        raise SystemExit(f"{label}: training failed ({rc})")
    with open(os.path.join(run_dir, "wall_seconds.txt"), "w") as f:
        f.write(f"{time.perf_counter() - t:.1f}\n")


def run_one(name: str, out: str, data: str, threads: int, seed: int) -> None:
    recipe = RUNS[name]
    init = recipe.get("init_from")
    if isinstance(init, str) and init.startswith("run:"):  # another run's final model.pt
        path = os.path.join(out, init[len("run:"):], "model.pt")
        if not os.path.isfile(path):
            raise SystemExit(f"{name}: init_from {init}: {path} not found (train that run first)")
        recipe = dict(recipe, init_from=path)
    if "clip_fraction" in recipe:
        recipe = dict(recipe)
        base = recipe["epochs"]
        data, recipe["epochs"] = clip_subset(data, os.path.join(out, name), recipe, seed)
        if recipe.get("val_every"):  # validate after the same shares of the steps
            recipe["val_every"] = max(1, round(recipe["val_every"] * recipe["epochs"] / base))
    train_run(recipe, os.path.join(out, name), data, threads, seed, name)


def clip_subset(data: str, run_dir: str, recipe: dict, seed: int) -> tuple[str, int]:
    """Keep a seeded fraction (``recipe.pop("clip_fraction")``, at least one clip) of every
    training subject's clips of the 3D npz ``data`` and all of the validation subjects' clips;
    write it as ``run_dir``/data_3d.npz. Returns its path and the epochs that give as many
    optimiser steps as ``recipe["epochs"]`` on the whole training set."""
    import numpy as np

    from posekernels.data import load_positions_3d, save_positions_3d

    frac = float(recipe.pop("clip_fraction"))
    if not 0 < frac <= 1:
        raise SystemExit(f"clip_fraction must lie in (0, 1], got {frac}")
    pos = load_positions_3d(data)
    val = set(recipe.get("val_subjects", VAL))
    train = recipe.get("train_subjects") or [s for s in sorted(pos) if s not in val]
    rng = np.random.default_rng(seed)
    kept, full, sub = {}, 0, 0
    for s in sorted(pos):
        clips = sorted(pos[s])
        if s in val:
            kept[s] = dict(pos[s])
            continue
        if s not in train:
            continue
        k = max(1, int(round(frac * len(clips))))
        pick = sorted(rng.choice(len(clips), size=k, replace=False))
        kept[s] = {clips[i]: pos[s][clips[i]] for i in pick}
        full += sum(len(a) for a in pos[s].values())
        sub += sum(len(kept[s][c]) for c in kept[s])
    os.makedirs(run_dir, exist_ok=True)
    path = os.path.join(run_dir, "data_3d.npz")
    save_positions_3d(path, kept)
    epochs = max(1, int(round(recipe["epochs"] * full / sub)))
    print(f"{os.path.basename(run_dir)}: {sum(len(v) for s, v in kept.items() if s not in val)} "
          f"training clips, {sub:,} of {full:,} frames; {epochs} epochs")
    return path, epochs


def table(out: str) -> dict:
    from posekernels.training import read_checkpoint

    rows = {}
    for name in RUNS:
        path = os.path.join(out, name, "model.pt")
        if not os.path.isfile(path):
            continue
        ck = read_checkpoint(path)
        cfg = ck["config"]
        hist_path = os.path.join(out, name, "history.json")
        with open(hist_path, encoding="utf-8") as f:
            history = json.load(f)
        params = sum(v.numel() for k, v in ck["model"].items()
                     if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
        rows[name] = {
            "label": LABELS.get(name, name), "model": ck["model_config"], "parameters": params,
            "epochs": cfg["epochs"], "seed": cfg["seed"], "batch_size": cfg["batch_size"],
            "frame_stride": cfg["frame_stride"], "optimizer": cfg["optimizer"],
            "train_seconds": round(sum(h["seconds"] for h in history), 1),
            "final_loss": history[-1]["loss"], "val": ck["metrics"],
            "checkpoint_bytes": os.path.getsize(path),
        }
    lines = ["| Run | Params | Epochs | Train time (s) | Val MPJPE (mm) | Val P-MPJPE (mm) "
             "| N-MPJPE (mm) | MPJVE (mm/frame) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        v = r["val"]
        lines.append(f"| {r['label']} | {r['parameters']:,} | {r['epochs']} | "
                     f"{r['train_seconds']:.0f} | {v['mpjpe']:.1f} | {v['p_mpjpe']:.1f} | "
                     f"{v['n_mpjpe']:.1f} | {v['mpjve']:.2f} |")
    result = {"rows": rows, "machine": f"{platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs", "validation_subjects": VAL,
              "validation_frames": next(iter(rows.values()))["val"]["frames"] if rows else 0}
    write_table(out, "results", result, lines)
    return result


def write_table(out: str, stem: str, data, lines: list[str]) -> None:
    """``data`` as <out>/<stem>.json and the markdown ``lines`` as <out>/<stem>.md (printed)."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, stem + ".json"), "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
    with open(os.path.join(out, stem + ".md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


SHIPPED = ("mount_centered", "mount_causal")  # the shipped lifters' runs (--ship-runs default)
FRAME_RATE = 50.0  # the rate import-bvh resamples the training motion to (recorded in checkpoints)


def shipped_metrics(model, data: str, cmu: str | None = None) -> dict:
    """Validation figures of a lifter on subject 09 in the settings the README reports: random
    evaluation cameras (4 per clip, the evaluation seed) with detector noise, the default rig
    with detector noise, and the default rig without noise (test-time flip on); with the BVH
    folder ``cmu``, also random cameras with noise at 30 fps (the motion resampled to a 30 fps
    camera): ``random_noise_30fps`` with the windows sampled at the model's 50 Hz spacing (as
    ``posekernels evaluate --bvh ... --fps 30`` and ``stream --fps 30``), ``random_noise_30fps_
    native`` with the camera frames fed as they are (``--native-rate``), and random cameras with
    noise through a COCO detector's points and the adapter (``random_noise_coco17``, as
    ``evaluate --keypoints coco17``)."""
    from posekernels.evaluation import (evaluate_sequences, headline, sequences_from_3d,
                                        sequences_from_bvh)

    out = {}
    for name, kw in (("random_noise", dict(cameras="random", detector_noise=True)),
                     ("rig_noise", dict(cameras="rig", detector_noise=True)),
                     ("rig", dict(cameras="rig", detector_noise=False))):
        seqs = sequences_from_3d(data, subjects=VAL, num_cameras=4, **kw)
        out[name] = headline(evaluate_sequences(model, seqs, flip_tta=True).summary())
    if cmu is not None:
        seqs = sequences_from_bvh([os.path.join(cmu, s) for s in VAL], fps=30.0,
                                  cameras="random", num_cameras=4, detector_noise=True)
        for name, rate in (("random_noise_30fps", 30.0), ("random_noise_30fps_native", None)):
            out[name] = headline(evaluate_sequences(model, seqs, flip_tta=True, fps=rate,
                                                    model_fps=FRAME_RATE).summary())
        seqs = sequences_from_bvh([os.path.join(cmu, s) for s in VAL], cameras="random",
                                  num_cameras=4, detector_noise=True, keypoints="coco17")
        out["random_noise_coco17"] = headline(evaluate_sequences(model, seqs,
                                                                 flip_tta=True).summary())
    return out


def ship(out: str, data: str, runs=SHIPPED, from_last: bool = False,
         cmu: str | None = None, weights: str = "auto") -> None:
    """Install the default lifters: each run in ``runs`` as posekernels/assets/
    default_centered.pt or default_causal.pt, by its model's ``causal`` flag (model + config +
    metrics + frame_rate only; each must stay under 10 MB). ``from_last`` ships a run's
    ``last.pt`` (an unfinished run; its epoch is recorded) instead of its final ``model.pt``;
    ``weights`` picks a last.pt's weight average ("auto", "average") or its last weights
    ("last"), recorded in the metrics as ``weights``."""
    from posekernels.training import load_checkpoint, read_checkpoint, save_checkpoint
    from posekernels.checkpoints import default_checkpoint_path

    for run in runs:
        src = os.path.join(out, run, "last.pt" if from_last else "model.pt")
        if not os.path.isfile(src):
            print(f"{run}: {src} not found; not shipped")
            continue
        ck = read_checkpoint(src)
        model = load_checkpoint(src, weights=weights)
        dst = default_checkpoint_path("causal" if ck["model_config"].get("causal") else
                                      "centered")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        cfg = dict(ck["config"])
        root = os.path.dirname(os.path.dirname(os.path.abspath(out)))  # <root>/out/cmu
        for key in ("data_3d", "out_dir"):  # machine-specific paths are not shipped
            cfg[key] = os.path.relpath(cfg[key], root) if cfg.get(key) else cfg.get(key)
        metrics = shipped_metrics(model, data, cmu)
        with open(os.path.join(out, run, "history.json"), encoding="utf-8") as f:
            hist = json.load(f)
        # epochs written before the trainer counted steps have none recorded: an epoch's step
        # count does not change within a run, so they get the recorded one
        counted = {h["steps"] for h in hist if h.get("steps")}
        if all(h.get("steps") for h in hist):
            steps = sum(h["steps"] for h in hist) or None
        elif len(counted) == 1:
            steps = sum(h.get("steps") or next(iter(counted)) for h in hist)
        else:
            steps = None
        which = model.checkpoint_info["weights"]
        if which == "model":  # model.pt holds the weight average of a run that kept one
            which = "average" if float(cfg.get("ema_decay") or 0) > 0 else "last"
        metrics.update(run=run, weights=which, validation_subjects=VAL,
                       epochs_done=ck.get("epoch"), epochs_planned=cfg.get("epochs"),
                       optimizer_steps=steps,
                       train_seconds=round(sum(h.get("seconds", 0) for h in hist), 1) or None)
        save_checkpoint(dst, model, model_config=ck["model_config"], config=cfg,
                        epoch=ck.get("epoch"), metrics=metrics, frame_rate=FRAME_RATE)
        size = os.path.getsize(dst)
        if size >= 10 * 2 ** 20:
            os.unlink(dst)
            raise SystemExit(f"{run}: checkpoint is {size} bytes, over 10 MB; not shipped")
        print(f"shipped {run} (epoch {ck.get('epoch')}, {size:,} bytes) as {dst}: "
              + json.dumps({k: round(v["mpjpe"], 1) for k, v in metrics.items()
                            if isinstance(v, dict)}))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cmu", default=os.path.join(ROOT, "..", "shared", "data", "cmu-mocap"))
    p.add_argument("--out", default=os.path.join(ROOT, "out", "cmu"))
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, from {list(RUNS)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--ship", action="store_true",
                   help="install the --ship-runs runs as the shipped models")
    p.add_argument("--ship-runs", default=",".join(SHIPPED),
                   help="--ship: the runs to install (default: %(default)s); a causal run "
                        "becomes default_causal.pt, a centred one default_centered.pt")
    p.add_argument("--from-last", action="store_true",
                   help="--ship: ship the runs' last.pt (unfinished runs, or to ship last weights)")
    p.add_argument("--ship-weights", choices=("auto", "average", "last"), default="auto",
                   help="--ship --from-last: the weight average (auto, average) or the last "
                        "weights (last) of a last.pt that holds both")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(args.out, "data_3d_cmu.npz")
    if not args.table_only:
        convert(args.cmu, data)
        for name in args.runs.split(","):
            if name not in RUNS:
                raise SystemExit(f"unknown run {name!r}; choose from {list(RUNS)}")
            run_one(name, args.out, data, args.threads, args.seed)
    result = table(args.out)
    if args.ship:
        ship(args.out, data, runs=tuple(args.ship_runs.split(",")), from_last=args.from_last,
             cmu=args.cmu if os.path.isdir(args.cmu) else None, weights=args.ship_weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())

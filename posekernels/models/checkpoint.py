"""Load the GLA-GCN authors' released checkpoints into :func:`posekernels.models.released_sagcn`.

Their files are ``torch.save`` dicts whose model entry is ``"model_pos"``, saved from a
DataParallel wrapper (every key starts with ``"module."``). The released network (names as in
their state dict, C channels, V joints, K = 3 partitions, Ce = C // 4)::

    data_bn.*                                  BatchNorm1d(2V)
    expand_gcn.gcn1.{conv_a,conv_b}.k.*        theta_k / phi_k, Conv2d(Cin, Ce, 1)
    expand_gcn.gcn1.conv_d.k.*                 W_k, Conv2d(Cin, C, 1)
    expand_gcn.gcn1.PA                         B (K, V, V)
    expand_gcn.gcn1.down.{0,1}.*               graph-unit shortcut: Conv2d 1x1 + BatchNorm
    expand_gcn.gcn1.bn.*                       graph-unit BatchNorm
    expand_gcn.tcn1.{conv,bn}.*                temporal unit, Conv2d (9, 1) + BatchNorm
    expand_gcn.residual.{conv,bn}.*            block shortcut, Conv2d 1x1 + BatchNorm
    layers_tcngcn.{2i}.{gcn1,tcn1}.*           stage i, stride-1 block (identity shortcuts)
    layers_tcngcn.{2i+1}.{gcn1,tcn1}.*         stage i, stride-3 block (no block shortcut)
    fc.{weight,bias}                           Conv1d(C, 3, 1), the shared head

The fixed partitions A are not stored: the model rebuilds them from the skeleton.

Two released HumanEva models have the same keys and shapes but compute different functions:

* the ground-truth model (``variant="gt"``, the default for 15 joints): input BatchNorm, the
  14-edge ``"humaneva15"`` graph;
* the Mask R-CNN detection model (their ``s_agcn_HE_13.py``, ``variant="mrcnn"``): its forward
  never calls ``data_bn`` (no input normalisation), its graph lacks two edges (thorax - right
  shoulder and pelvis - left hip: 12 edges, :data:`HUMANEVA15_MRCNN`), and it takes 17 COCO
  detections that it remaps to the 15 HumanEva joints itself (:func:`humaneva15_from_coco17`
  does that remap for our model, which takes the 15 joints).

Keys and shapes cannot tell them apart, but the input BatchNorm can: the MRCNN model never runs
``data_bn``, so its statistics keep their initial values (mean 0, variance 1, 0 batches
tracked), while a trained ground-truth model's do not. ``variant=None`` (the default) loads the
ground-truth model unless a 15-joint file's ``data_bn`` never ran, which it refuses (pick the
variant explicitly); ``variant="mrcnn"`` refuses a file whose ``data_bn`` did run.

Files are read with ``torch.load(weights_only=True)``, allowing beyond torch's tensor globals
only the exact names of :func:`official_checkpoint_globals` (numpy scalar and numeric array
reconstruction, ``argparse.Namespace``, and the numpy RandomState of their training script,
which is replaced by an inert placeholder). Nothing is allowed by module prefix.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping

import torch
from torch import Tensor

from ..skeletons import Skeleton, get_skeleton
from .glagcn import GLAGCN, released_sagcn

__all__ = ["load_official_checkpoint", "convert_official_state_dict", "official_key_shapes",
           "read_official_state_dict", "official_checkpoint_globals", "HUMANEVA15_MRCNN",
           "humaneva15_from_coco17", "OFFICIAL_VARIANTS"]

_K = 3
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
OFFICIAL_VARIANTS = ("gt", "mrcnn")


def _humaneva15_mrcnn() -> Skeleton:
    base = get_skeleton("humaneva15")
    dropped = {(1, 5), (0, 8)}  # thorax - right shoulder, pelvis - left hip
    edges = tuple(e for e in base.edges if e not in dropped)
    assert len(edges) == len(base.edges) - 2
    return Skeleton("humaneva15_mrcnn", base.joint_names, base.parents, base.left, base.right,
                    edges=edges)


#: The graph of the authors' HumanEva Mask R-CNN model (``s_agcn_HE_13.py``): the 15 HumanEva
#: joints with the ``"humaneva15"`` edges less (1, 5) (thorax - right shoulder) and (0, 8)
#: (pelvis - left hip), i.e. their 1-based (2, 6) and (1, 9). Joint order, parents and left/right
#: lists are those of ``"humaneva15"``.
HUMANEVA15_MRCNN = _humaneva15_mrcnn()

# COCO index of each HumanEva joint in the MRCNN model's remap (pelvis and thorax are midpoints)
_COCO_PELVIS, _COCO_THORAX = (11, 12), (5, 6)
_COCO_FOR_HUMANEVA = {2: 5, 3: 7, 4: 9, 5: 6, 6: 8, 7: 10, 8: 11, 9: 13, 10: 15, 11: 12,
                      12: 14, 13: 16, 14: 0}


def humaneva15_from_coco17(keypoints: Tensor) -> Tensor:
    """The 17 COCO keypoints (..., 17, C) as the 15 HumanEva joints (..., 15, C), the remap the
    authors' HumanEva MRCNN model applies inside its forward: pelvis = mean of the hips (COCO 11,
    12), thorax = mean of the shoulders (5, 6), arms and legs from the COCO joints of the same
    side (left shoulder/elbow/wrist 5/7/9, right 6/8/10, left hip/knee/ankle 11/13/15, right
    12/14/16), head = the nose (0). Apply it to detections before a model loaded with
    ``variant="mrcnn"``. Works on normalised coordinates (any C)."""
    if not isinstance(keypoints, Tensor) or keypoints.dim() < 2 or keypoints.shape[-2] != 17:
        got = (tuple(keypoints.shape) if isinstance(keypoints, Tensor)
               else type(keypoints).__name__)
        raise ValueError(f"keypoints must be a tensor (..., 17, C) in COCO order, got {got}")
    pelvis = keypoints[..., list(_COCO_PELVIS), :].mean(dim=-2)
    thorax = keypoints[..., list(_COCO_THORAX), :].mean(dim=-2)
    rest = keypoints[..., [_COCO_FOR_HUMANEVA[j] for j in range(2, 15)], :]
    return torch.cat([pelvis.unsqueeze(-2), thorax.unsqueeze(-2), rest], dim=-2)


def _bn(prefix: str, c: int) -> dict:
    return {f"{prefix}.{n}": (() if n == "num_batches_tracked" else (c,)) for n in _BN}


def _graph_unit_keys(prefix: str, cin: int, cout: int, v: int) -> dict:
    ce = cout // 4 if cout // 4 >= 1 else 3
    keys = {f"{prefix}.PA": (_K, v, v)}
    for k in range(_K):
        keys[f"{prefix}.conv_a.{k}.weight"] = (ce, cin, 1, 1)
        keys[f"{prefix}.conv_a.{k}.bias"] = (ce,)
    for k in range(_K):
        keys[f"{prefix}.conv_b.{k}.weight"] = (ce, cin, 1, 1)
        keys[f"{prefix}.conv_b.{k}.bias"] = (ce,)
    for k in range(_K):
        keys[f"{prefix}.conv_d.{k}.weight"] = (cout, cin, 1, 1)
        keys[f"{prefix}.conv_d.{k}.bias"] = (cout,)
    if cin != cout:
        keys[f"{prefix}.down.0.weight"] = (cout, cin, 1, 1)
        keys[f"{prefix}.down.0.bias"] = (cout,)
        keys.update(_bn(f"{prefix}.down.1", cout))
    keys.update(_bn(f"{prefix}.bn", cout))
    return keys


def _block_keys(prefix: str, cin: int, cout: int, v: int, residual_conv: bool) -> dict:
    keys = _graph_unit_keys(f"{prefix}.gcn1", cin, cout, v)
    keys[f"{prefix}.tcn1.conv.weight"] = (cout, cout, 9, 1)
    keys[f"{prefix}.tcn1.conv.bias"] = (cout,)
    keys.update(_bn(f"{prefix}.tcn1.bn", cout))
    if residual_conv:
        keys[f"{prefix}.residual.conv.weight"] = (cout, cin, 1, 1)
        keys[f"{prefix}.residual.conv.bias"] = (cout,)
        keys.update(_bn(f"{prefix}.residual.bn", cout))
    return keys


def official_key_shapes(receptive_field: int = 243, channels: int = 96, joints: int = 17) -> dict:
    """Every key of the released model's state dict (without ``module.``) and its shape."""
    stages = 0
    t = receptive_field
    while t > 1 and t % 3 == 0:
        t //= 3
        stages += 1
    if t != 1 or stages < 1:
        raise ValueError(f"receptive_field must be 3**k with k >= 1, got {receptive_field}")
    c, v = channels, joints
    keys = _bn("data_bn", 2 * v)
    keys.update(_block_keys("expand_gcn", 2, c, v, residual_conv=True))
    for i in range(2 * stages):
        keys.update(_block_keys(f"layers_tcngcn.{i}", c, c, v, residual_conv=False))
    keys["fc.weight"] = (3, c, 1)
    keys["fc.bias"] = (3,)
    return keys


# ----------------------------------------------------------------------------- reading files
class _DiscardedRandomState:
    """Stands in for the numpy RandomState the authors' training script stores under
    ``"random_state"`` (its generator's state, not needed to rebuild the model). Accepts and
    drops whatever the pickle passes, so no numpy.random code runs while loading."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def __repr__(self) -> str:
        return "<discarded numpy RandomState>"


def _numpy_multiarray():
    try:  # numpy >= 2
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # pragma: no cover - numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


# dtype character codes of the numeric numpy types (bool, signed/unsigned integers, floats,
# complex). An array or scalar rebuilds its dtype with ``numpy.dtype(code)`` and then sets its
# state, which the weights-only loader only allows on the exact dtype classes listed.
_NUMERIC_DTYPE_CODES = "?bBhHiIlLqQefdgFDG"

# Globals that pickles of a RandomState reference (numpy 1.x and 2.x), all mapped to
# _DiscardedRandomState.
_RANDOM_STATE_GLOBALS = (
    "numpy.random.__RandomState_ctor",
    "numpy.random.mtrand.RandomState",
    "numpy.random._pickle.__randomstate_ctor",
    "numpy.random._pickle.__bit_generator_ctor",
    "numpy.random._mt19937.MT19937",
)


def _official_safe_globals() -> list:
    """The exact globals (beyond torch's own tensor and container set) that a weights-only load
    of an authors' checkpoint may use, as ``(object, "module.name")`` pairs or classes.

    Their ``torch.save`` dict holds ``"model_pos"`` (tensors), ``"epoch"`` and ``"lr"`` (numbers,
    possibly numpy scalars), ``"optimizer"`` (tensors and numbers) and ``"random_state"`` (a
    numpy RandomState); some runs also store the ``argparse.Namespace`` of their arguments.
    Nothing is allowed by module prefix: every name below is one function or class.
    """
    import argparse

    import numpy as np

    multiarray = _numpy_multiarray()
    out: list = [(np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"),
                 (argparse.Namespace, "argparse.Namespace")]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):  # numpy 1.x / 2.x names
        out.append((multiarray._reconstruct, f"{module}._reconstruct"))
        out.append((multiarray.scalar, f"{module}.scalar"))
    dtype_classes = []
    for code in _NUMERIC_DTYPE_CODES:
        cls = type(np.dtype(code))
        if cls is not np.dtype and cls not in dtype_classes:
            dtype_classes.append(cls)
    out.extend(dtype_classes)
    out.extend((_DiscardedRandomState, name) for name in _RANDOM_STATE_GLOBALS)
    return out


def official_checkpoint_globals() -> list[str]:
    """The names of :func:`_official_safe_globals` (for documentation and tests)."""
    return [entry[1] if isinstance(entry, tuple) else f"{entry.__module__}.{entry.__qualname__}"
            for entry in _official_safe_globals()]


_EXPECTED = "expected a GLA-GCN checkpoint (a torch.save file holding a dict with 'model_pos')"


def describe_load_error(exc: BaseException) -> str:
    """A one-line reason for a failed ``torch.load``: the refused global when the weights-only
    loader names one, else ``Type: first informative line`` (torch's advice to retry with
    ``weights_only=False`` is left out on purpose)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"refused global {found.group(1)}"
    skip = ("Weights only load failed", "Please file an issue", "Check the documentation")
    for line in text.splitlines():
        line = line.strip()
        if "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        if line and not line.startswith(skip):
            return f"{type(exc).__name__}: {line}"
    return type(exc).__name__


def _refused_globals(path: str, exc: BaseException) -> list[str]:
    """The globals of ``path`` that the load refused (best effort, never unpickles)."""
    try:
        with torch.serialization.safe_globals(_official_safe_globals()):
            names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        names = []
    if not names:
        names = re.findall(r"GLOBAL (\S+)", str(exc))
    return sorted(set(names))


def _torch_load(path, map_location):
    """``torch.load(weights_only=True)`` with torch's tensor globals plus exactly the numpy and
    argparse globals of :func:`_official_safe_globals`. Every failure is a ValueError naming
    the file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory, {_EXPECTED}")
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file, {_EXPECTED}")
    try:
        if os.path.getsize(path) == 0:
            raise ValueError(f"{path}: empty file (0 bytes), {_EXPECTED}")
        with torch.serialization.safe_globals(_official_safe_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except ValueError as exc:
        if str(exc).startswith(f"{path}: "):
            raise
        raise ValueError(f"{path}: not a readable checkpoint ({exc}), {_EXPECTED}") from None
    except pickle.UnpicklingError as exc:
        refused = _refused_globals(path, exc)
        if refused:
            raise ValueError(f"{path}: holds objects that a weights-only load refuses "
                             f"({', '.join(refused)}); only tensors, numbers, numpy arrays and "
                             "plain containers are read: convert it to a plain state dict "
                             "first") from None
        raise ValueError(f"{path}: not a readable checkpoint ({describe_load_error(exc)}), "
                         f"{_EXPECTED}") from None
    except Exception as exc:  # truncated zip, EOF, unreadable file ...
        raise ValueError(f"{path}: not a readable checkpoint ({describe_load_error(exc)}), "
                         f"{_EXPECTED}") from None


def _state_dict_of(obj) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a checkpoint dict or a state dict, got {type(obj).__name__}")
    if "model_pos" in obj:
        obj = obj["model_pos"]
        if not isinstance(obj, Mapping):
            raise ValueError(f"checkpoint entry 'model_pos' must be a state dict, got {type(obj).__name__}")
    out = {}
    for key, value in obj.items():
        if not isinstance(key, str):
            raise ValueError(f"state dict keys must be strings, got {key!r}")
        name = key[len("module."):] if key.startswith("module.") else key
        if not isinstance(value, Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor "
                             "(is this a GLA-GCN checkpoint?)")
        if name in out:
            raise ValueError(f"state dict key {name!r} appears both with and without 'module.'")
        out[name] = value
    if not out:
        raise ValueError("the state dict is empty")
    return out


def read_official_state_dict(path_or_state_dict, map_location="cpu") -> dict[str, Tensor]:
    """The model state dict of a checkpoint file or dict, with any ``module.`` prefix removed.

    Accepts their training checkpoint (a dict with ``"model_pos"``), a bare state dict with or
    without the ``module.`` prefix, or a path to either. Files are read with
    ``torch.load(weights_only=True)`` allowing only the globals of
    :func:`official_checkpoint_globals` (numpy scalars and numeric arrays, argparse.Namespace;
    a stored numpy RandomState is replaced by a placeholder). Any problem with a file raises
    ValueError naming it.
    """
    obj = path_or_state_dict
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        obj = _torch_load(path, map_location)
        try:
            return _state_dict_of(obj)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return _state_dict_of(obj)


# ----------------------------------------------------------------------------- conversion
def _infer_layout(sd: Mapping[str, Tensor]) -> tuple[int, int, int]:
    key = "expand_gcn.gcn1.conv_d.0.weight"
    if key not in sd:
        raise ValueError(f"missing key {key!r}: cannot infer the channel count (is this a released "
                         "GLA-GCN S_AGCN checkpoint?)")
    if sd[key].dim() != 4:
        raise ValueError(f"key {key!r} has shape {tuple(sd[key].shape)}, expected (C, 2, 1, 1)")
    channels = int(sd[key].shape[0])
    key = "data_bn.weight"
    if key not in sd:
        raise ValueError(f"missing key {key!r}: cannot infer the joint count")
    if sd[key].dim() != 1 or sd[key].shape[0] % 2:
        raise ValueError(f"key {key!r} has shape {tuple(sd[key].shape)}, expected (2V,)")
    joints = int(sd[key].shape[0]) // 2
    layers = set()
    for name in sd:
        if name.startswith("layers_tcngcn."):
            index = name.split(".")[1]
            if not index.isdigit():
                raise ValueError(f"unexpected key {name!r} in the checkpoint")
            layers.add(int(index))
    if not layers:
        raise ValueError("no 'layers_tcngcn.*' keys: cannot infer the receptive field")
    n = max(layers) + 1
    if n % 2:
        raise ValueError(f"found layers_tcngcn.0..{n - 1}: expected an even number of layers "
                         f"(two per stage); missing key prefix 'layers_tcngcn.{n}.'")
    return 3 ** (n // 2), channels, joints


def _data_bn_never_ran(sd: Mapping[str, Tensor]) -> bool:
    """Whether the input BatchNorm kept its initial statistics (0 batches, mean 0, variance 1):
    the forward that produced these weights never called it."""
    return (int(sd["data_bn.num_batches_tracked"]) == 0
            and bool(torch.all(sd["data_bn.running_mean"] == 0))
            and bool(torch.all(sd["data_bn.running_var"] == 1)))


def _resolve_variant(sd: Mapping[str, Tensor], joints: int, variant: str | None) -> str:
    """``"gt"`` or ``"mrcnn"`` for a checked state dict (see the module doc)."""
    if variant is not None and variant not in OFFICIAL_VARIANTS:
        raise ValueError(f"variant must be None, 'gt' or 'mrcnn', got {variant!r}")
    never_ran = _data_bn_never_ran(sd)
    if variant == "mrcnn":
        if joints != 15:
            raise ValueError(f"variant='mrcnn' is the authors' 15-joint HumanEva Mask R-CNN model "
                             f"(s_agcn_HE_13.py); this checkpoint has {joints} joints")
        if not never_ran:
            raise ValueError(
                "variant='mrcnn': this checkpoint's input BatchNorm ran (data_bn.num_batches_"
                f"tracked = {int(sd['data_bn.num_batches_tracked'])}, statistics changed), but "
                "the MRCNN model's forward never calls it: this is not that model (load the "
                "ground-truth HumanEva model with variant=None or 'gt')")
        return "mrcnn"
    if variant is None and joints == 15 and never_ran:
        raise ValueError(
            "this 15-joint checkpoint's input BatchNorm never ran (data_bn has 0 batches tracked, "
            "mean 0, variance 1): it is most likely the authors' HumanEva Mask R-CNN model "
            "(s_agcn_HE_13.py: no input BatchNorm, two graph edges fewer, COCO-17 input), which "
            "has the same keys and shapes as the ground-truth model but computes another function."
            " Pass variant='mrcnn' for it (its input: humaneva15_from_coco17(detections)), or "
            "variant='gt' for an untrained ground-truth model")
    return "gt"


def _variant_skeleton(skeleton, variant: str) -> Skeleton:
    if variant == "gt":
        return get_skeleton("h36m17" if skeleton is None else skeleton)
    if (skeleton is None or (isinstance(skeleton, str) and skeleton == "humaneva15")
            or (isinstance(skeleton, Skeleton) and skeleton == HUMANEVA15_MRCNN)):
        return HUMANEVA15_MRCNN
    raise ValueError(f"variant='mrcnn' uses its own graph (HUMANEVA15_MRCNN, 'humaneva15' less two "
                     f"edges); pass skeleton=None or 'humaneva15', got {skeleton!r}")


def convert_official_state_dict(state_dict, skeleton: str | Skeleton | None = None,
                                variant: str | None = None):
    """Map a released state dict onto :func:`released_sagcn`'s parameter names.

    Returns ``(our_state_dict, receptive_field, channels)``. Raises ValueError naming the first
    unknown, missing or mis-shaped key, or a joint count that does not fit ``skeleton`` (None:
    ``"h36m17"``).
    ``variant`` as in :func:`load_official_checkpoint`; for ``"mrcnn"`` the unused ``data_bn``
    entries are dropped (the model is built with ``input_bn=False``).
    """
    if variant is not None and variant not in OFFICIAL_VARIANTS:
        raise ValueError(f"variant must be None, 'gt' or 'mrcnn', got {variant!r}")
    sd = read_official_state_dict(state_dict)
    sk = _variant_skeleton(skeleton, "mrcnn" if variant == "mrcnn" else "gt")
    receptive_field, channels, joints = _infer_layout(sd)
    if variant == "mrcnn" and joints != 15:
        raise ValueError(f"variant='mrcnn' is the authors' 15-joint HumanEva Mask R-CNN model "
                         f"(s_agcn_HE_13.py); this checkpoint has {joints} joints")
    if joints != sk.num_joints:
        raise ValueError(f"key 'data_bn.weight' has shape {tuple(sd['data_bn.weight'].shape)}: the "
                         f"checkpoint is for {joints} joints but skeleton {sk.name!r} has "
                         f"{sk.num_joints} (expected shape ({2 * sk.num_joints},)); pass the "
                         "matching skeleton (for example 'humaneva15' for 15 joints)")
    expected = official_key_shapes(receptive_field, channels, joints)
    unknown = [k for k in sd if k not in expected]
    if unknown:
        raise ValueError(f"unexpected key {unknown[0]!r} in the checkpoint"
                         + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                         + f"; a T={receptive_field}, C={channels} released model has no such key")
    missing = [k for k in expected if k not in sd]
    if missing:
        raise ValueError(f"missing key {missing[0]!r} in the checkpoint"
                         + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise ValueError(f"key {key!r} has shape {tuple(sd[key].shape)}, expected {shape} "
                             f"(T={receptive_field}, C={channels}, V={joints})")
    variant = _resolve_variant(sd, joints, variant)

    out: dict[str, Tensor] = {}

    def bn(src: str, dst: str) -> None:
        for n in _BN:
            out[f"{dst}.{n}"] = sd[f"{src}.{n}"]

    def graph_unit(src: str, dst: str, has_down: bool) -> None:
        out[f"{dst}.B"] = sd[f"{src}.PA"]
        for ours, theirs in (("theta", "conv_a"), ("phi", "conv_b")):
            out[f"{dst}.{ours}_w"] = torch.stack(
                [sd[f"{src}.{theirs}.{k}.weight"][:, :, 0, 0] for k in range(_K)])
            out[f"{dst}.{ours}_b"] = torch.stack([sd[f"{src}.{theirs}.{k}.bias"] for k in range(_K)])
        out[f"{dst}.W"] = torch.stack([sd[f"{src}.conv_d.{k}.weight"][:, :, 0, 0] for k in range(_K)])
        out[f"{dst}.bias"] = torch.stack([sd[f"{src}.conv_d.{k}.bias"] for k in range(_K)])
        if has_down:
            out[f"{dst}.shortcut.conv.weight"] = sd[f"{src}.down.0.weight"]
            out[f"{dst}.shortcut.conv.bias"] = sd[f"{src}.down.0.bias"]
            bn(f"{src}.down.1", f"{dst}.shortcut.bn")
        bn(f"{src}.bn", f"{dst}.bn")

    def block(src: str, dst: str, first: bool) -> None:
        graph_unit(f"{src}.gcn1", f"{dst}.gcn", has_down=first)
        out[f"{dst}.tcn.conv.weight"] = sd[f"{src}.tcn1.conv.weight"]
        out[f"{dst}.tcn.conv.bias"] = sd[f"{src}.tcn1.conv.bias"]
        bn(f"{src}.tcn1.bn", f"{dst}.tcn.bn")
        if first:
            out[f"{dst}.residual.conv.weight"] = sd[f"{src}.residual.conv.weight"]
            out[f"{dst}.residual.conv.bias"] = sd[f"{src}.residual.conv.bias"]
            bn(f"{src}.residual.bn", f"{dst}.residual.bn")

    if variant != "mrcnn":
        bn("data_bn", "data_bn")
    block("expand_gcn", "expand", first=True)
    stages = 0
    t = receptive_field
    while t > 1:
        t //= 3
        stages += 1
    for i in range(stages):
        block(f"layers_tcngcn.{2 * i}", f"stages.{i}.block1", first=False)
        block(f"layers_tcngcn.{2 * i + 1}", f"stages.{i}.block2", first=False)
    out["head.W_shared"] = sd["fc.weight"][:, :, 0].t()
    out["head.b_shared"] = sd["fc.bias"]
    return out, receptive_field, channels


def load_official_checkpoint(path_or_state_dict, skeleton: str | Skeleton | None = None,
                             map_location="cpu", *, variant: str | None = None) -> GLAGCN:
    """Build :func:`released_sagcn` from the authors' checkpoint and return it in eval mode.

    ``path_or_state_dict``: a file path (read by :func:`read_official_state_dict`), their
    checkpoint dict (model under ``"model_pos"``), or a bare state dict, with or without the
    ``module.`` prefix. The receptive field (3 ** (number of layers_tcngcn / 2)) and the channel
    count are inferred from the keys; ``skeleton`` must have the checkpoint's joint count
    (``"h36m17"``, the default when None, or ``"humaneva15"`` for the released files). Unknown,
    missing or mis-shaped keys raise ValueError naming the key; a missing, empty, truncated or
    unreadable file, a directory, or a file holding other objects raises ValueError naming the
    file.

    ``variant`` (keyword only): which released network the file holds (see the module doc).

    * ``None`` (default): the standard model (input BatchNorm, the skeleton's full graph);
      a 15-joint file whose input BatchNorm never ran is refused, since it is most likely the
      MRCNN model below, which has the same keys and shapes.
    * ``"gt"``: the standard model, without that check.
    * ``"mrcnn"``: the authors' HumanEva Mask R-CNN model (``s_agcn_HE_13.py``): built with
      ``input_bn=False`` on :data:`HUMANEVA15_MRCNN` (``skeleton`` None or ``"humaneva15"``).
      It takes the 15 HumanEva joints: pass COCO-17 detections through
      :func:`humaneva15_from_coco17` first, as their forward does.
    """
    sd = read_official_state_dict(path_or_state_dict, map_location=map_location)
    try:
        ours, receptive_field, channels = convert_official_state_dict(sd, skeleton, variant)
        resolved = _resolve_variant(sd, _infer_layout(sd)[2], variant)
    except ValueError as exc:
        if isinstance(path_or_state_dict, (str, os.PathLike)):
            raise ValueError(f"{os.fspath(path_or_state_dict)}: {exc}") from None
        raise
    sk = _variant_skeleton(skeleton, resolved)
    if resolved == "mrcnn":
        model = GLAGCN(receptive_field=receptive_field, channels=channels, skeleton=sk,
                       sequence_branch=False, head="shared", causal=False, block="agcn",
                       temporal="strided", dropout=0.1, input_bn=False)
    else:
        model = released_sagcn(receptive_field=receptive_field, channels=channels, skeleton=sk)
    result = model.load_state_dict(ours, strict=True)
    if result.missing_keys or result.unexpected_keys:  # pragma: no cover - strict raises first
        raise ValueError(f"internal mapping error: {result}")
    return model.eval()

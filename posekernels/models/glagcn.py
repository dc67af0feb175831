"""GLA-GCN (Yu et al., ICCV 2023): global-local adaptive graph convolution for 3D pose lifting.

Building blocks (all graph work goes through :func:`posekernels.ops.adaptive_graph_conv`, all
per-joint output layers through :func:`posekernels.ops.grouped_joint_linear`):

* :class:`GraphUnit` -- adaptive graph convolution (fixed partitions A, learned B, attention C)
  + BatchNorm + dropout + shortcut + ReLU.
* :class:`TemporalUnit` -- the 9-tap temporal convolution (optionally strided, optionally
  causal) + BatchNorm.
* :class:`AGCNBlock` -- ``ReLU(temporal(graph(x)) + shortcut(x))``.
* :class:`StridedModule` -- two blocks (the second with stride 3) with a residual around them
  that samples one frame in three (or, for the average-pooling ablations, two stride-1 blocks).
* :class:`JointHead` -- the output layers: ``"icl"`` (individually connected layer: per-joint and
  shared weights blended by lambda, fixed or learnable), ``"shared"`` (one weight for all joints,
  the released head)
  and ``"fc"`` (a fully connected layer on the flattened features).
* :class:`GLAGCN` -- the paper's full model and its ablations; :func:`released_sagcn` -- the
  authors' released single-frame model.

The mpjpe-style loss helpers for the paper's two training stages live here too. Every
deviation from the paper and from the released code is listed in docs/FIDELITY.md.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..skeletons import Skeleton, get_skeleton

__all__ = [
    "GraphUnit", "TemporalUnit", "AGCNBlock", "StridedModule", "JointHead", "GLAGCN",
    "released_sagcn", "mpjpe_loss", "target_pose", "glagcn_local_loss", "glagcn_global_loss",
    "glagcn_stage1_loss", "glagcn_stage2_loss", "check_pose_input", "IdentityInputNorm",
    "TEMPORAL_KINDS", "LEARNABLE", "normalize_window", "window_input",
]

TEMPORAL_KERNEL = 9
STRIDE = 3
# "strided": the paper's strided design; "avgpool": ablation, each module pools 3 frames;
# "avgpool_end": ablation as the paper describes it, F(C, T, V) kept to the end, then one pool
TEMPORAL_KINDS = ("strided", "avgpool", "avgpool_end")
LEARNABLE = "learnable"  # lam="learnable": lambda = sigmoid(lam_logit), a parameter


# ----------------------------------------------------------------------------- input checks
def check_pose_input(x, *, joints: int, coords: int, skeleton: str, window: int | None = None,
                     layout: str, dtype: torch.dtype | None = None) -> None:
    """Shape, dtype and value checks for a model input; raises ValueError/TypeError naming what
    was expected. ``layout`` describes the expected shape, e.g. ``"(N, T, V, 2)"``. ``dtype``:
    the model's parameter dtype; the input must have it (models do not cast their input), except
    under ``torch.autocast`` for the input's device, where float16, bfloat16 and float32 inputs
    of a float16/bfloat16/float32 model are all accepted (autocast casts them). The NaN/inf
    check is skipped while torch.compile traces and is queued asynchronously on CUDA."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input must be a torch.Tensor of shape {layout}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor of shape {layout}, got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype and not _autocast_accepts(x, dtype):
        raise TypeError(f"input has dtype {x.dtype} but the model's parameters are {dtype}; the "
                        f"model does not cast its input: pass x.to({dtype}) (or convert the model "
                        f"with model.to({x.dtype}))")
    ndim = 4 if window is not None else 3
    expected = (["N"] + ([str(window)] if window is not None else []) + [str(joints), str(coords)])
    expected_txt = "(" + ", ".join(expected) + ")"
    if x.dim() != ndim:
        raise ValueError(f"input must have shape {layout} = {expected_txt} ({ndim} dimensions), "
                         f"got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"input must hold at least one sample, got shape {tuple(x.shape)}")
    if window is not None and x.shape[1] != window:
        raise ValueError(f"input window has {x.shape[1]} frames but the model's receptive field is "
                         f"{window}: expected shape {expected_txt}, got {tuple(x.shape)}")
    if x.shape[-2] != joints:
        raise ValueError(f"input has {x.shape[-2]} joints but skeleton {skeleton!r} has {joints}: "
                         f"expected shape {expected_txt}, got {tuple(x.shape)}")
    if x.shape[-1] != coords:
        raise ValueError(f"input's last dimension must be {coords} (coordinates per joint): "
                         f"expected shape {expected_txt}, got {tuple(x.shape)}")
    if torch.compiler.is_compiling():
        return
    if x.device.type == "cpu":
        if not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or inf; every coordinate must be finite")
    else:
        torch._assert_async(torch.isfinite(x).all(), "input contains NaN or inf; every "
                            "coordinate must be finite")


_AUTOCAST_ELIGIBLE = (torch.float16, torch.bfloat16, torch.float32)


def _autocast_conv_dtype(x: Tensor) -> torch.dtype | None:
    """The dtype autocast gives a convolution's input ``x`` (None: autocast off or x not cast)."""
    kind = x.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind) and x.dtype in _AUTOCAST_ELIGIBLE:
        return torch.get_autocast_dtype(kind)
    return None


def _autocast_accepts(x: Tensor, dtype: torch.dtype) -> bool:
    """Whether autocast is on for x's device and both x and the model's dtype are ones it casts."""
    kind = x.device.type
    return (kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind)
            and x.dtype in _AUTOCAST_ELIGIBLE and dtype in _AUTOCAST_ELIGIBLE)


# ----------------------------------------------------------------------------- units
def bn_act(bn: nn.BatchNorm2d, z: Tensor, *, dropout: nn.Dropout | None = None,
           residual: Tensor | None = None, relu: bool = False,
           out_dtype: torch.dtype | None = None) -> Tensor:
    """``act(dropout(bn(z)) + residual)`` through :func:`posekernels.ops.batch_norm_act` (one
    fused pass on the ``cpu`` backend in training), with the module's own state: its momentum
    (None: the cumulative average), ``num_batches_tracked`` counted, running statistics
    updated, exactly as ``bn.forward`` does them; ``dropout`` applies when that module is
    training; ``out_dtype`` as in :func:`posekernels.ops.batch_norm_act`."""
    training = bn.training or bn.running_mean is None
    factor = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            factor = 1.0 / float(bn.num_batches_tracked)
    track = not bn.training or bn.track_running_stats
    p = dropout.p if dropout is not None and dropout.training else 0.0
    return ops.batch_norm_act(z, bn.weight, bn.bias, bn.running_mean if track else None,
                              bn.running_var if track else None, training, factor, bn.eps,
                              dropout=p, residual=residual, relu=relu, out_dtype=out_dtype)


def drop(module: nn.Dropout, x: Tensor) -> Tensor:
    """``module(x)`` through :func:`posekernels.ops.dropout` (counter-based masks on ``cpu``)."""
    return ops.dropout(x, module.p, module.training)


def _kaiming_fan_out_(w: Tensor) -> None:
    nn.init.kaiming_normal_(w, mode="fan_out")


class ConvBN(nn.Module):
    """1x1 convolution + BatchNorm (the graph unit's shortcut when channels change)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1)
        self.bn = nn.BatchNorm2d(out_channels)
        _kaiming_fan_out_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return bn_act(self.bn, self.conv(x))


class GraphUnit(nn.Module):
    """Adaptive graph convolution + BatchNorm + dropout + shortcut + ReLU.

    ``y = ReLU(dropout(BN(sum_k W_k (x (A_k + B_k + C_k)))) + shortcut(x))`` where the sum is
    :func:`posekernels.ops.adaptive_graph_conv`. ``adaptive=False`` drops B, ``attention=False``
    drops the data-dependent C (together: an ST-GCN graph unit). The attention embedding width
    is ``out_channels // 4`` (3 when that is 0). The shortcut is the identity when the channel
    count is unchanged, else a 1x1 convolution + BatchNorm.

    Parameters: ``A`` (buffer, not saved) the (K, V, V) partitions; ``W`` (K, Cout, Cin) and
    ``bias`` (K, Cout) the per-partition channel mixes; ``B`` (K, V, V); ``theta_w``/``phi_w``
    (K, Ce, Cin) with biases (K, Ce).
    """

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, adaptive: bool = True,
                 attention: bool = True, dropout: float = 0.1):
        super().__init__()
        k, v, _ = A.shape
        self.in_channels, self.out_channels = in_channels, out_channels
        # the constant graph: a non-saved buffer, rebuilt from an exact float64 copy whenever the
        # module changes dtype/device (so model.double() gets 1/3, not float32's 1/3)
        self._A_exact = A.detach().to("cpu", torch.float64).clone()
        self.register_buffer("A", A.detach().to(torch.float32).clone(), persistent=False)
        self.W = nn.Parameter(torch.empty(k, out_channels, in_channels))
        self.bias = nn.Parameter(torch.zeros(k, out_channels))
        nn.init.normal_(self.W, 0.0, math.sqrt(2.0 / (out_channels * in_channels * k)))
        if adaptive:
            self.B = nn.Parameter(torch.full((k, v, v), 1e-6))
        else:
            self.register_parameter("B", None)
        if attention:
            ce = out_channels // 4
            if ce < 1:
                ce = 3
            self.embed_channels = ce
            std = math.sqrt(2.0 / ce)  # Kaiming normal, fan_out of a (Ce, Cin, 1, 1) convolution
            self.theta_w = nn.Parameter(torch.randn(k, ce, in_channels) * std)
            self.theta_b = nn.Parameter(torch.zeros(k, ce))
            self.phi_w = nn.Parameter(torch.randn(k, ce, in_channels) * std)
            self.phi_b = nn.Parameter(torch.zeros(k, ce))
        else:
            self.embed_channels = 0
            for name in ("theta_w", "theta_b", "phi_w", "phi_b"):
                self.register_parameter(name, None)
        self.bn = nn.BatchNorm2d(out_channels)
        nn.init.constant_(self.bn.weight, 1e-6)
        self.drop = nn.Dropout(dropout)
        self.shortcut = ConvBN(in_channels, out_channels) if in_channels != out_channels else None

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.A = self._A_exact.to(device=self.A.device, dtype=self.A.dtype)
        return self

    def forward(self, x: Tensor, out_dtype: torch.dtype | None = None) -> Tensor:
        """``out_dtype``: the result's dtype (None: the epilogue's own; see
        :func:`posekernels.ops.batch_norm_act`, which under bf16 autocast on the cpu backend
        writes a bfloat16 result directly)."""
        y = ops.adaptive_graph_conv(x, self.A, self.W, self.bias, self.B, self.theta_w,
                                    self.theta_b, self.phi_w, self.phi_b)
        s = x if self.shortcut is None else self.shortcut(x)
        return bn_act(self.bn, y, dropout=self.drop, residual=s, relu=True, out_dtype=out_dtype)


def causal_shift(x: Tensor, kernel: int, stride: int) -> Tensor:
    """Shift a (N, C, T, V) input so a centred-padded temporal convolution becomes causal: pad
    ``kernel - stride`` frames on the left (or drop frames when that is negative)."""
    left = kernel - stride
    if left > 0:
        return F.pad(x, (0, 0, left, 0))
    if left < 0:
        return x[:, :, -left:]
    return x


class TemporalUnit(nn.Module):
    """Temporal convolution with kernel (k, 1) and stride (s, 1), then BatchNorm (no ReLU).

    Centred (default): zero padding (k - 1) / 2 on both sides; output frame i is centred on input
    frame s * i. Causal: the window is shifted so output frame i ends on input frame
    s * i + s - 1 (the last frame of its group) and never sees a later frame: k - s frames of
    zero padding on the left (or, when k < s, the first s - k frames are skipped).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int = TEMPORAL_KERNEL,
                 stride: int = 1, causal: bool = False):
        super().__init__()
        self.kernel, self.stride, self.causal = kernel, stride, causal
        pad = 0 if causal else (kernel - 1) // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (kernel, 1), stride=(stride, 1),
                              padding=(pad, 0))
        self.bn = nn.BatchNorm2d(out_channels)
        _kaiming_fan_out_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: Tensor, residual: Tensor | None = None, relu: bool = False) -> Tensor:
        """``act(bn(conv(x)) + residual)`` (act = ReLU if ``relu``). The convolution is
        ``self.conv`` (oneDNN on the CPU) in training too: the cpu backend's differentiable
        Winograd convolution (:func:`posekernels.ops.temporal_conv`) made a whole training step
        slower at the models' shapes (benchmarks/RESULTS.md)."""
        if self.causal:
            x = causal_shift(x, self.kernel, self.stride)
        return bn_act(self.bn, self.conv(x), residual=residual, relu=relu)


class AGCNBlock(nn.Module):
    """``ReLU(temporal(graph(x)) + shortcut(x))``.

    The block shortcut is the identity when channels and stride are unchanged, a 1x1 (strided)
    convolution + BatchNorm otherwise, and absent with ``residual=False``.
    """

    def __init__(self, in_channels: int, out_channels: int, A: Tensor, stride: int = 1,
                 residual: bool = True, causal: bool = False, adaptive: bool = True,
                 attention: bool = True, kernel: int = TEMPORAL_KERNEL):
        super().__init__()
        self.gcn = GraphUnit(in_channels, out_channels, A, adaptive=adaptive, attention=attention)
        self.tcn = TemporalUnit(out_channels, out_channels, kernel, stride, causal)
        if not residual:
            self.residual_mode = "none"
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual_mode = "identity"
            self.residual = None
        else:
            self.residual_mode = "conv"
            self.residual = TemporalUnit(in_channels, out_channels, 1, stride, causal)

    def forward(self, x: Tensor) -> Tensor:
        if self.residual_mode == "identity":
            r = x
        elif self.residual_mode == "conv":
            r = self.residual(x)
        else:
            r = None
        # the graph unit's result feeds only the temporal convolution: under autocast it is
        # made in the dtype the convolution would cast it to (on the cpu backend by the fused
        # epilogue itself, which saves a conversion each way)
        return self.tcn(self.gcn(x, out_dtype=_autocast_conv_dtype(x)), residual=r, relu=True)


class StridedModule(nn.Module):
    """One temporal stage: the window shrinks by 3 (or, ``"avgpool_end"``, keeps its length).

    ``r + dropout(block2(dropout(block1(x))))`` where block1 is a stride-1 block with its
    shortcut and block2 a stride-3 block without one; ``r`` keeps one frame in three: frames
    1, 4, 7, ... (the centre of each group; the released arrangement, whose strided convolution
    output i is centred on frame 3i) or, causal, frames 2, 5, 8, ... (the last of each group).

    ``temporal="avgpool"`` (ablation, one pool per module): block2 runs at stride 1 and a
    3-frame average pooling (stride 3) shrinks the window instead of the strided convolution.
    ``temporal="avgpool_end"`` (ablation as the paper describes it): block2 runs at stride 1,
    nothing is pooled here and ``r = x`` (every frame kept); :class:`GLAGCN` averages over the
    whole window after the last module. Such a module has no ``pool``/``offset``: reading them
    raises NotImplementedError (they describe how a shrinking module samples its residual).
    All three have the same parameters.
    """

    def __init__(self, channels: int, A: Tensor, causal: bool = False, temporal: str = "strided",
                 dropout: float = 0.1, adaptive: bool = True, attention: bool = True):
        super().__init__()
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        self.temporal = temporal
        self.shrinks = temporal != "avgpool_end"
        self._pool = temporal == "avgpool"
        kw = dict(causal=causal, adaptive=adaptive, attention=attention)
        self.block1 = AGCNBlock(channels, channels, A, stride=1, residual=True, **kw)
        stride2 = STRIDE if temporal == "strided" else 1
        self.block2 = AGCNBlock(channels, channels, A, stride=stride2, residual=False, **kw)
        self.drop = nn.Dropout(dropout)
        self._offset = STRIDE - 1 if causal else STRIDE // 2

    def _shrinking_only(self, name: str) -> None:
        if not self.shrinks:
            raise NotImplementedError(
                f"StridedModule.{name}: a temporal='avgpool_end' module keeps every frame (no "
                "residual sampling, no pooling of its own; the model pools once at the end). Code "
                "written for the shrinking modules (the folded inference plan used by streaming, "
                "batch inference and ONNX export) does not support it: run the model itself "
                "(fold=False)")

    @property
    def pool(self) -> bool:
        """Whether the module pools 3 frames (``"avgpool"``) instead of striding."""
        self._shrinking_only("pool")
        return self._pool

    @property
    def offset(self) -> int:
        """The frame of each group of three that the residual keeps (1, or 2 when causal)."""
        self._shrinking_only("offset")
        return self._offset

    def forward(self, x: Tensor) -> Tensor:
        if not self.shrinks:
            return x + drop(self.drop, self.block2(drop(self.drop, self.block1(x))))
        r = x[:, :, self._offset::STRIDE]
        y = drop(self.drop, self.block1(x))
        y = drop(self.drop, self.block2(y))
        if self._pool:
            y = F.avg_pool2d(y, (STRIDE, 1), stride=(STRIDE, 1))
        return r + y


class JointHead(nn.Module):
    """Per-joint output layer on features (..., V, C) -> (..., V, out).

    * ``"icl"``: the individually connected layer, ``lam * (v_i W_i + b_i) + (1 - lam) *
      (v_i W_s + b_s)`` (per-joint ``W_joint`` (V, C, out) and shared ``W_shared`` (C, out));
    * ``"shared"``: ``v_i W_s + b_s`` only (the released Conv1d(C, out, 1) head);
    * ``"fc"``: one fully connected layer on the flattened (V * C) features to V * out.

    ``lam``: a fixed float in [0, 1] (default 0.5, a hyper-parameter: no parameter, no state-dict
    entry), or ``"learnable"`` (``"icl"`` only): lambda = ``sigmoid(lam_logit)`` with
    ``lam_logit`` a 0-dim parameter initialised to 0, so lambda starts at 0.5 and stays in
    [0, 1] however it is trained; it reaches :func:`posekernels.ops.grouped_joint_linear` as a
    0-dim tensor and receives a gradient. The :attr:`lam` property reads the current value as a
    float either way (and sets it: a learnable lambda then needs a value strictly inside (0, 1)).

    Weights start like PyTorch's default Linear initialisation (uniform, bound 1/sqrt(fan_in)).
    """

    def __init__(self, kind: str, channels: int, joints: int, out_features: int = 3,
                 lam: float | str = 0.5):
        super().__init__()
        if kind not in ("icl", "shared", "fc"):
            raise ValueError(f"head must be 'icl', 'shared' or 'fc', got {kind!r}")
        learnable = _check_lam(lam)
        if learnable and kind != "icl":
            raise ValueError(f"lam='learnable' needs head='icl' (the only head that blends two "
                             f"weight groups), got head={kind!r}")
        self.kind, self.joints, self.out_features = kind, joints, out_features
        self.lam_learnable = learnable
        self._lam = 0.5 if learnable else float(lam)
        fan_in = channels * joints if kind == "fc" else channels
        bound = 1.0 / math.sqrt(fan_in)

        def uniform(*shape):
            return nn.Parameter(torch.empty(*shape).uniform_(-bound, bound))

        if kind == "icl":
            self.W_joint = uniform(joints, channels, out_features)
            self.b_joint = uniform(joints, out_features)
        else:
            self.register_parameter("W_joint", None)
            self.register_parameter("b_joint", None)
        if kind == "fc":
            self.W_shared = uniform(joints * channels, joints * out_features)
            self.b_shared = uniform(joints * out_features)
        else:
            self.W_shared = uniform(channels, out_features)
            self.b_shared = uniform(out_features)
        # registered last: the fixed-lambda heads keep their parameter list and state dict
        if learnable:
            self.lam_logit = nn.Parameter(torch.zeros(()))
        else:
            self.register_parameter("lam_logit", None)

    @property
    def lam(self) -> float:
        """The current lambda as a Python float (``sigmoid(lam_logit)`` when learnable)."""
        if self.lam_logit is not None:
            return float(torch.sigmoid(self.lam_logit.detach().double()))
        return self._lam

    @lam.setter
    def lam(self, value: float) -> None:
        if isinstance(value, (bool, str)):
            raise TypeError(f"lam must be a float, got {type(value).__name__}")
        value = float(value)
        if self.lam_logit is None:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"lam must lie in [0, 1], got {value!r}")
            self._lam = value
            return
        if not 0.0 < value < 1.0:
            raise ValueError(f"a learnable lam is sigmoid(lam_logit): it can be set to a value "
                             f"strictly inside (0, 1), got {value!r}")
        with torch.no_grad():
            self.lam_logit.fill_(math.log(value / (1.0 - value)))

    def lam_value(self) -> float | Tensor:
        """What the forward passes as lambda: the float, or ``sigmoid(lam_logit)`` (0-dim)."""
        if self.lam_logit is not None:
            return torch.sigmoid(self.lam_logit)
        return self._lam

    def forward(self, x: Tensor) -> Tensor:
        if self.kind == "fc":
            lead = x.shape[:-2]
            flat = x.reshape(*lead, 1, x.shape[-2] * x.shape[-1])
            y = ops.grouped_joint_linear(flat, None, None, self.W_shared, self.b_shared)
            return y.reshape(*lead, self.joints, self.out_features)
        return ops.grouped_joint_linear(x, self.W_joint, self.b_joint, self.W_shared,
                                        self.b_shared, self.lam_value())


def _check_lam(lam) -> bool:
    """Validate a ``lam`` argument; True for ``"learnable"``."""
    if isinstance(lam, str):
        if lam != LEARNABLE:
            raise ValueError(f"lam must be a float in [0, 1] or 'learnable', got {lam!r}")
        return True
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a float in [0, 1] or 'learnable', got {lam!r}") from None
    if isinstance(lam, bool) or not 0.0 <= value <= 1.0:
        raise ValueError(f"lam must lie in [0, 1], got {lam!r}")
    return False


class IdentityInputNorm(nn.Module):
    """Stands where ``data_bn`` is in a model built with ``input_bn=False`` (the authors' HumanEva
    MRCNN model, whose forward skips its input BatchNorm): the identity.

    It has no parameters and saves nothing, but exposes the fields of an eval-mode BatchNorm
    whose affine map is exactly the identity (``running_mean`` 0, ``running_var`` 1, ``eps`` 0,
    no weight or bias), so code that folds the input BatchNorm into the next layer (the folded
    inference plan) folds the identity.
    """

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features
        self.eps = 0.0
        self.weight = None
        self.bias = None
        self.register_buffer("running_mean", torch.zeros(num_features), persistent=False)
        self.register_buffer("running_var", torch.ones(num_features), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x


def normalize_window(x: Tensor, root: int = 0, min_scale: float = 1e-4) -> Tensor:
    """Each 2D window (N, T, V, 2) moved and scaled into the model's own frame: minus the mean
    position of the ``root`` joint over the window, divided by the window's pose size (the
    root-mean-square distance of the joints from their frame's root, over every frame and
    joint; at least ``min_scale``). The result does not depend on where the person stands in
    the image or how large they appear (camera distance, focal length, image size), only on the
    pose and its motion; it commutes with a horizontal flip. ``GLAGCN(window_norm=True)``
    applies it first."""
    r = x[:, :, root:root + 1]
    centre = r.mean(dim=1, keepdim=True)
    size = (x - r).square().sum(dim=-1).mean(dim=(1, 2)).sqrt()
    return (x - centre) / size.clamp_min(min_scale)[:, None, None, None]


def window_input(x: Tensor, root: int = 0) -> Tensor:
    """The four input channels of ``GLAGCN(window_norm=True)``: (N, T, V, 2) normalised screen
    coordinates -> (N, T, V, 4), :func:`normalize_window` of the window, then the ``root``
    joint's screen position of the same frame (repeated on every joint)."""
    r = x[:, :, root:root + 1].expand(-1, -1, x.shape[2], -1)
    return torch.cat([normalize_window(x, root), r], dim=-1)


# ----------------------------------------------------------------------------- the model
def _stages_for(receptive_field) -> int:
    if isinstance(receptive_field, bool) or not isinstance(receptive_field, int):
        raise ValueError(f"receptive_field must be an int 3**k (k >= 1), got {receptive_field!r}")
    k, t = 0, receptive_field
    while t > 1 and t % 3 == 0:
        t //= 3
        k += 1
    if t != 1 or k < 1:
        raise ValueError(f"receptive_field must be 3**k with k >= 1 (3, 9, 27, 81, 243, ...), "
                         f"got {receptive_field}")
    return k


class GLAGCN(nn.Module):
    """GLA-GCN: global-local adaptive GCN lifting a 2D window to the 3D pose of one frame.

    ``forward(x)`` takes normalised 2D keypoints ``x`` (N, T, V, 2) with T = ``receptive_field``
    and returns the 3D pose (N, 1, V, 3) of the window's centre frame (index (T - 1) / 2), or of
    its last frame when ``causal=True``. ``forward(x, return_sequence=True)`` returns
    ``(pose, sequence)`` where ``sequence`` (N, T, V, 3) is the global branch's reconstruction of
    the whole 3D pose sequence (``sequence_branch=True`` only).

    Arrangement (T = 3**k, C = ``channels``, V joints, K = 3 partitions)::

        x (N, T, V, 2) -> channels in joint*2 + coordinate order -> BatchNorm1d(2V)
          -> (N, 2, T, V) -> expand: AGCN block 2 -> C (graph shortcut 1x1 conv + BN,
                                      block shortcut 1x1 conv + BN)
          -> global branch (sequence_branch=True): ``global_blocks`` (default 4) AGCN blocks
             C -> C at stride 1, each followed by dropout; the features (N, C, T, V) give the
             sequence reconstruction through a shared per-joint projection C -> 3
             (``sequence_head``, grouped_joint_linear with one shared weight)
          -> k strided modules (each: stride-1 block with shortcut, stride-3 block without,
             residual sampling one frame in three): (N, C, T, V) -> (N, C, 1, V)
          -> head on each joint's C-vector: "icl" lam * (v_i W_i + b_i) + (1 - lam) * (v_i W_s
             + b_s), or "shared", or "fc" -> (N, 1, V, 3)

    Parameter count at T = 243, C = 96, h36m17 (K = 3, V = 17): data BatchNorm 68; expand block
    86,547; each C -> C block 126,195 (graph unit 42,963 incl. B = 867; temporal unit 83,232);
    4 global blocks 504,780; sequence projection 291; 5 strided modules (10 blocks) 1,261,950;
    individually connected layer 5,238 (per-joint 17 x (96 x 3 + 3) = 4,947, shared 291).
    Total **1,858,874**: 1.1 % below the paper's 1.88M (its "1.35M without" is this model with
    ``sequence_branch=False``: 1,353,803). Why four global blocks: the released single-frame
    model (1,348,856) is the strided branch alone, so the sequence branch must add about
    0.53M; one C -> C block is 0.126M, so 4 blocks plus the two small heads give 1.859M (within
    1.2 %), while 3 blocks (1.733M, -7.8 %) or 5 blocks (1.985M, +5.6 %) miss the published
    figure (at C = 512 the same four blocks give 52.0M against the paper's 48.64M, which three
    blocks would fit: see docs/FIDELITY.md). The global blocks run at stride 1 over the whole
    window (their output is the sequence feature F(C, T, V)), the projection to 3D is shared by
    all joints and frames (a 1x1 convolution, like the released head, where the paper writes an
    AGCN(96, 3, 1): an AGCN block ends in a ReLU and could not output negative coordinates), and
    lambda is by default a fixed hyper-parameter, 0.5 (``lam="learnable"`` learns it).

    Options:

    * ``causal=True``: every temporal convolution is shifted to end on the current frame (zero
      padding on the left only) and the strided modules' residual keeps the last frame of each
      group of three, so the output is the window's last frame and the sequence features of
      frame t use no later frame through any convolution. (The attention term of the adaptive
      graph sums over the whole window by design, so with ``block="agcn"`` a reconstructed
      sequence frame may see later frames of the same window; the output pose, the last frame,
      never sees beyond the window.)
    * ``block="stgcn"``: graph units without B and without attention (ST-GCN ablation).
    * ``temporal="avgpool_end"``: the average-pooling ablation as the paper describes it: the
      features keep their full length F(C, T, V) through every module (both blocks at stride 1,
      the module residual is the identity) and one average over the T frames after the last
      module gives F(C, 1, V). Same parameter count. (Causal: every convolution still ends on
      its own frame, and the output averages the whole window, which ends on the current
      frame.) The folded inference plan (streaming, batch inference, ONNX export) does not
      take this variant (it raises; run the model itself).
    * ``temporal="avgpool"``: the older, per-module variant of that ablation: each strided
      module's stride-3 convolution becomes a stride-1 block followed by a 3-frame average
      pooling (stride 3), so the window still shrinks by 3 per module. Same parameter count.
    * ``head="fc"``: a fully connected layer on the flattened (V * C) features; ``"shared"``:
      one shared C -> 3 layer for all joints (the released head).
    * ``lam``: the individually connected layer's blend, a fixed float in [0, 1] (default 0.5)
      or ``"learnable"``: lambda = sigmoid(``head.lam_logit``), a parameter initialised at 0
      (lambda 0.5), kept in [0, 1] by the sigmoid (needs ``head="icl"``; adds the state-dict
      entry ``head.lam_logit``). :attr:`lam` reads the current value as a float.
    * ``global_blocks`` (keyword only): the number of C -> C blocks in the global branch.
    * ``window_norm`` (keyword only, default False): the model takes four channels per joint
      instead of two: the window centred on its root joint's mean position and divided by its
      pose size (:func:`normalize_window`: the pose and its motion, whatever the person's size
      in the image), and the root joint's own normalised screen position in each frame (the
      direction in which the camera sees the person, which sets the pose's rotation in the
      camera frame). :func:`window_input` builds them; the inference plan, streaming and export
      apply it the same way. The input BatchNorm then has 4V channels.
    * ``input_bn`` (keyword only, default True): the input BatchNorm1d(2V). ``False``: no input
      normalisation (``data_bn`` is then an :class:`IdentityInputNorm`, nothing saved), as in
      the authors' HumanEva MRCNN model (:func:`posekernels.models.load_official_checkpoint`
      with ``variant="mrcnn"``).

    Any receptive field 3**k (k >= 1) and any skeleton of :mod:`posekernels.skeletons` (or a
    :class:`~posekernels.skeletons.Skeleton`).

    Dtypes: the input must have the model's dtype (float32 unless converted with ``.double()``
    & co.); another dtype raises TypeError naming both (the input is not cast). Under
    ``torch.autocast`` the model runs forward and backward on every backend, and float16,
    bfloat16 and float32 inputs are all accepted; the graph ops run in the autocast dtype.
    """

    def __init__(self, receptive_field: int = 243, channels: int = 96,
                 skeleton: str | Skeleton = "h36m17", sequence_branch: bool = True,
                 head: str = "icl", lam: float | str = 0.5, causal: bool = False,
                 block: str = "agcn", temporal: str = "strided", dropout: float = 0.1, *,
                 global_blocks: int = 4, input_bn: bool = True, window_norm: bool = False):
        super().__init__()
        stages = _stages_for(receptive_field)
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(f"channels must be a positive int, got {channels!r}")
        if head not in ("icl", "shared", "fc"):
            raise ValueError(f"head must be 'icl', 'shared' or 'fc', got {head!r}")
        if block not in ("agcn", "stgcn"):
            raise ValueError(f"block must be 'agcn' or 'stgcn', got {block!r}")
        if temporal not in TEMPORAL_KINDS:
            raise ValueError(f"temporal must be one of {TEMPORAL_KINDS}, got {temporal!r}")
        if _check_lam(lam) and head != "icl":
            raise ValueError(f"lam='learnable' needs head='icl', got head={head!r}")
        if not isinstance(input_bn, bool):
            raise ValueError(f"input_bn must be True or False, got {input_bn!r}")
        if not isinstance(window_norm, bool):
            raise ValueError(f"window_norm must be True or False, got {window_norm!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout!r}")
        if isinstance(global_blocks, bool) or not isinstance(global_blocks, int) or global_blocks < 0:
            raise ValueError(f"global_blocks must be a non-negative int, got {global_blocks!r}")
        sk = get_skeleton(skeleton)
        self.skeleton = sk
        self.receptive_field = receptive_field
        self.channels = channels
        self.num_joints = v = sk.num_joints
        self.causal = bool(causal)
        self.sequence_branch = bool(sequence_branch)
        self.head_kind, self.block_kind, self.temporal_kind = head, block, temporal
        self.target_index = receptive_field - 1 if causal else (receptive_field - 1) // 2
        adaptive = attention = block == "agcn"
        kw = dict(causal=self.causal, adaptive=adaptive, attention=attention)
        A = sk.partitions(torch.float64)

        self.input_bn = input_bn
        self.window_norm = window_norm
        self.root = sk.root
        cin = 4 if window_norm else 2
        self.in_channels = cin
        self.data_bn = nn.BatchNorm1d(cin * v) if input_bn else IdentityInputNorm(cin * v)
        self.expand = AGCNBlock(cin, channels, A, stride=1, residual=True, **kw)
        self.global_blocks = nn.ModuleList(
            [AGCNBlock(channels, channels, A, stride=1, residual=True, **kw)
             for _ in range(global_blocks if sequence_branch else 0)])
        self.sequence_head = JointHead("shared", channels, v) if sequence_branch else None
        self.stages = nn.ModuleList(
            [StridedModule(channels, A, temporal=temporal, dropout=dropout, **kw)
             for _ in range(stages)])
        self.head = JointHead(head, channels, v, lam=lam)
        self.drop = nn.Dropout(dropout)

    @property
    def lam(self) -> float:
        """The head's lambda as a float (its current value when learnable)."""
        return self.head.lam

    def check_input(self, x: Tensor) -> None:
        check_pose_input(x, joints=self.num_joints, coords=2, skeleton=self.skeleton.name,
                         window=self.receptive_field, layout="(N, T, V, 2)",
                         dtype=self.expand.gcn.W.dtype)

    def features(self, x: Tensor) -> Tensor:
        """Normalised input (N, T, V, 2) -> expand-block features (N, C, T, V)."""
        n, t, v, c = x.shape
        if self.window_norm:
            x = window_input(x, self.root)
            c = x.shape[-1]
        h = x.permute(0, 2, 3, 1).reshape(n, v * c, t)  # channel = joint * c + coordinate
        h = self.data_bn(h)
        h = h.reshape(n, v, c, t).permute(0, 2, 3, 1).contiguous()
        return self.expand(h)

    def forward(self, x: Tensor, return_sequence: bool = False):
        self.check_input(x)
        if return_sequence and not self.sequence_branch:
            raise ValueError("return_sequence=True needs the sequence branch; this model was built "
                             "with sequence_branch=False")
        h = self.features(x)
        sequence = None
        if self.sequence_branch:
            for blk in self.global_blocks:
                h = drop(self.drop, blk(h))
            if return_sequence:
                sequence = self.sequence_head(h.permute(0, 2, 3, 1))  # (N, T, V, 3)
        for stage in self.stages:
            h = stage(h)
        if self.temporal_kind == "avgpool_end":
            h = h.mean(dim=2, keepdim=True)  # the paper's ablation: F(C, T, V) -> F(C, 1, V)
        pose = self.head(h[:, :, 0].transpose(1, 2)).unsqueeze(1)  # (N, 1, V, 3)
        if return_sequence:
            return pose, sequence
        return pose

    def loss(self, x: Tensor, target_sequence: Tensor, stage: int = 1) -> Tensor:
        """The paper's training loss on a batch: stage 1 ``L_global + L_local`` (needs the
        sequence branch), stage 2 ``L_local``. ``target_sequence`` (N, T, V, 3) holds the 3D
        targets of every frame of the window (root-relative, metres)."""
        if stage == 1:
            pose, sequence = self.forward(x, return_sequence=True)
            return glagcn_stage1_loss(pose, sequence, target_sequence, causal=self.causal)
        if stage == 2:
            pose = self.forward(x)
            return glagcn_stage2_loss(pose, target_pose(target_sequence, causal=self.causal))
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def released_sagcn(receptive_field: int = 243, channels: int = 96,
                   skeleton: str | Skeleton = "h36m17") -> GLAGCN:
    """The authors' released single-frame strided AGCN: no sequence branch, one shared C -> 3 head.

    Built from the same blocks as :class:`GLAGCN` (``sequence_branch=False, head="shared"``).
    Parameter counts at C = 96: 844,076 / 1,096,466 / 1,348,856 (h36m17, T = 27 / 81 / 243),
    842,724 / 1,094,730 / 1,346,736 (humaneva15). Load the authors' weights with
    :func:`posekernels.models.load_official_checkpoint`.
    """
    return GLAGCN(receptive_field=receptive_field, channels=channels, skeleton=skeleton,
                  sequence_branch=False, head="shared", causal=False, block="agcn",
                  temporal="strided", dropout=0.1)


# ----------------------------------------------------------------------------- losses
def mpjpe_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Mean per-joint position error: mean Euclidean distance over the last axis (differentiable)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} must "
                         "have the same shape")
    return torch.linalg.vector_norm(pred - target, dim=-1).mean()


def target_pose(target_sequence: Tensor, causal: bool = False) -> Tensor:
    """The frame a GLA-GCN window predicts: (N, T, V, 3) -> (N, 1, V, 3), the centre frame
    (T - 1) / 2, or the last frame when ``causal``."""
    if target_sequence.dim() != 4:
        raise ValueError(f"target_sequence must have shape (N, T, V, 3), got {tuple(target_sequence.shape)}")
    t = target_sequence.shape[1]
    i = t - 1 if causal else (t - 1) // 2
    return target_sequence[:, i:i + 1]


def glagcn_local_loss(pose: Tensor, target: Tensor) -> Tensor:
    """L_local: MPJPE of the predicted frame; ``pose`` and ``target`` (N, 1, V, 3)."""
    return mpjpe_loss(pose, target)


def glagcn_global_loss(sequence: Tensor, target_sequence: Tensor) -> Tensor:
    """L_global: MPJPE over all frames and joints of the reconstructed sequence (N, T, V, 3)."""
    return mpjpe_loss(sequence, target_sequence)


def glagcn_stage1_loss(pose: Tensor, sequence: Tensor, target_sequence: Tensor,
                       causal: bool = False) -> Tensor:
    """Stage 1 of the paper's training: ``L_global + L_local``."""
    return (glagcn_global_loss(sequence, target_sequence)
            + glagcn_local_loss(pose, target_pose(target_sequence, causal)))


def glagcn_stage2_loss(pose: Tensor, target: Tensor) -> Tensor:
    """Stage 2 of the paper's training: ``L_local`` alone; ``target`` (N, 1, V, 3)."""
    return glagcn_local_loss(pose, target)

"""Inference plans: an eval-mode model rewritten for repeated forwards on fixed shapes.

:func:`build_plan` turns a :class:`~posekernels.models.GLAGCN` (any head, block, temporal
variant, causal or not, with or without the sequence branch) into a :class:`GLAGCNPlan`, a
module with the same output as ``model.eval()(x)[:, 0]`` (to float rounding, checked by the tests)
that does less work per call:

* every BatchNorm is folded into the layer before it (data BatchNorm -> one affine on the input
  window; graph-unit BN -> the per-partition channel mix ``W`` and ``bias`` of the adaptive graph
  convolution; temporal BN -> the temporal convolution; shortcut BN -> its 1x1 convolution);
* dropout, input checks and the sequence head (unused at inference) are dropped;
* residual additions and ReLUs run in place (fused ``aten::_add_relu_`` on the CPU), the strided
  modules' residual is added in place;
* the individually connected layer's two weight groups are blended once
  (:func:`posekernels.ops.blend_joint_weights`; lam is fixed);
* with the default ``backend=None``, when the automatic backend of the model's device is a
  compiled one (``cpu``/``cuda``), the ops run through :mod:`posekernels.ops.unchecked`: the
  kernels :func:`posekernels.ops.adaptive_graph_conv` & co. dispatch to, without repeating the
  checked ops' Python argument validation on every call; otherwise, and with an explicit
  ``backend``, through the checked ops of :mod:`posekernels.ops`;
* on that path on the CPU (float32/float64 models) a graph unit is one
  :func:`~posekernels.ops.unchecked.graph_unit` call (graph convolution + shortcut + ReLU) and a
  block's temporal convolution one :func:`~posekernels.ops.unchecked.temporal_conv` call
  (Winograd F(4, 3), the block's residual, a 1x1 residual convolution included, and ReLU fused;
  weights transformed once here). The Winograd convolutions round differently from a direct
  convolution: the plan then matches the model to about 1e-5 relative instead of 1e-6 (the tests
  bound it).

Under :func:`torch.autocast` the unchecked path runs in the model's own dtype with autocast off
(its kernels take one dtype); the checked paths follow autocast like the ops do.

``precision="bf16"`` (float32 CPU plans on that path): the weights of those graph-unit and
temporal-convolution calls (the channel mix ``W``, the attention embeddings ``theta_w`` /
``phi_w``, the 1x1 shortcuts, the transformed temporal weights) are stored as bfloat16, and the kernels multiply them with the activations rounded to
bfloat16, accumulating in float32 (AVX-512 BF16 instructions where the CPU has them, about twice
the multiply-adds per instruction of float32; elsewhere the same rounded operands through the
float32 product). Everything else (the joint mixing, the attention's softmax term, the head,
biases, activations between layers) stays float32. It is an approximation: the operands' rounding (2^-9
relative) moves a lifted pose by a fraction of a millimetre to a few millimetres (README and
benchmarks/RESULTS.md give the measured cost on the shipped lifters).

With ``backend="reference"`` every op goes through the plain PyTorch reference formulation,
which is what :mod:`posekernels.export` traces to ONNX.

Any other model (a single-frame :class:`~posekernels.models.GlobalNodeGCN`, a user module with a
``receptive_field``) gets a :class:`ModulePlan` that simply calls it in eval mode.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from ..models.glagcn import causal_shift, window_input
from ..ops import reference, unchecked

__all__ = ["build_plan", "GLAGCNPlan", "ModulePlan", "PRECISIONS"]


def _bn_affine(bn: nn.Module) -> tuple[Tensor, Tensor]:
    """(scale, shift) of an eval-mode BatchNorm, computed in float64."""
    var = bn.running_var.detach().double()
    mean = bn.running_mean.detach().double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double()
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias.detach().double()
    return scale, shift


def _fold_conv(conv: nn.Conv2d, bn: nn.Module) -> tuple[Tensor, Tensor]:
    scale, shift = _bn_affine(bn)
    w = conv.weight.detach().double() * scale[:, None, None, None]
    b = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(shift)
    return w, b * scale + shift


def _add_relu_(y: Tensor, r: Tensor) -> Tensor:
    """In place ``relu(y + r)``: one fused pass on the CPU (aten::_add_relu_ has CPU kernels
    only), two in-place ops elsewhere."""
    if y.device.type == "cpu":
        return torch.ops.aten._add_relu_(y, r)
    return y.add_(r).relu_()


def _p(t: Tensor | None, like: Tensor) -> nn.Parameter | None:
    if t is None:
        return None
    return nn.Parameter(t.detach().to(dtype=like.dtype, device=like.device).contiguous(),
                        requires_grad=False)


class _Graph(nn.Module):
    """Folded GraphUnit: ReLU(agc(x; W*s, bias*s (+t)) + shortcut(x))."""

    def __init__(self, unit, backend, fast):
        super().__init__()
        ref = unit.W
        scale, shift = _bn_affine(unit.bn)
        W = unit.W.detach().double() * scale[None, :, None]
        bias = unit.bias.detach().double() * scale[None, :]
        bias[0] += shift
        self.backend, self.fast = backend, fast
        self.register_buffer("A", unit.A.detach().clone())
        self.W, self.bias = _p(W, ref), _p(bias, ref)
        self.B = _p(unit.B, ref)
        self.theta_w, self.theta_b = _p(unit.theta_w, ref), _p(unit.theta_b, ref)
        self.phi_w, self.phi_b = _p(unit.phi_w, ref), _p(unit.phi_b, ref)
        if unit.shortcut is None:
            self.sc_w = self.sc_b = None
        else:
            w, b = _fold_conv(unit.shortcut.conv, unit.shortcut.bn)
            self.sc_w, self.sc_b = _p(w, ref), _p(b, ref)

    def to_bf16(self) -> None:
        """Store the weights of the fused unit's products as bfloat16 (the plan's precision)."""
        self.W.data = self.W.data.bfloat16()
        if self.theta_w is not None:  # the attention embedding's product
            self.theta_w.data = self.theta_w.data.bfloat16()
            self.phi_w.data = self.phi_w.data.bfloat16()
        if self.sc_w is not None:
            self.sc_w.data = self.sc_w.data.bfloat16()

    def forward(self, x: Tensor) -> Tensor:
        if self.fast:
            x = x.contiguous()
        args = (x, self.A, self.W, self.bias, self.B, self.theta_w, self.theta_b, self.phi_w,
                self.phi_b)
        if self.fast and x.device.type == "cpu":
            # one pass: relu(agc(x) + shortcut(x)) (the CPU kernel's inference epilogue)
            return unchecked.graph_unit(*args, self.sc_w, self.sc_b, relu=True)
        if self.fast:
            y = unchecked.adaptive_graph_conv(*args)
        elif self.backend == "reference":
            y = reference.adaptive_graph_conv(*args)
        else:
            y = ops.adaptive_graph_conv(*args, backend=self.backend)
        shortcut = x if self.sc_w is None else F.conv2d(x, self.sc_w, self.sc_b)
        if self.backend == "reference":  # plain ops only (traceable for ONNX)
            return F.relu(y + shortcut)
        return _add_relu_(y, shortcut)


class _Temporal(nn.Module):
    """Folded TemporalUnit: conv (k, 1) / stride (s, 1) with the BN folded in.

    ``fused``: convolutions of at least 3 taps per stride phase on the CPU with the compiled
    extension run :func:`posekernels.ops.unchecked.temporal_conv` (Winograd F(4, 3), with the
    block's residual and ReLU fused in; see :meth:`fused_forward`), its weight transformed once
    here."""

    def __init__(self, unit, channels_last=False, fused=False):
        super().__init__()
        ref = unit.conv.weight
        w, b = _fold_conv(unit.conv, unit.bn)
        self.weight, self.bias = _p(w, ref), _p(b, ref)
        self.channels_last = channels_last and unit.kernel > 1
        if self.channels_last:
            self.weight.data = self.weight.data.contiguous(memory_format=torch.channels_last)
        self.kernel, self.stride, self.causal = unit.kernel, unit.stride, unit.causal
        self.pad = unit.conv.padding[0]
        self.fused = bool(fused) and -(-self.kernel // self.stride) >= 3
        if self.fused:
            self.weight_t = _p(unchecked.temporal_conv_weight(w.to(ref.dtype), self.stride), ref)
            # causal: the shift pads k - s frames on the left and the convolution none
            self.pads = ((self.kernel - self.stride, 0) if self.causal
                         else (self.pad, self.pad))

    def forward(self, x: Tensor) -> Tensor:
        if self.causal:
            x = causal_shift(x, self.kernel, self.stride)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return F.conv2d(x, self.weight, self.bias, stride=(self.stride, 1), padding=(self.pad, 0))

    def fused_forward(self, x: Tensor, residual: Tensor | None, relu: bool,
                      residual_w: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """``act(conv(x) + bias + residual)`` in one compiled pass (only when ``fused``); with
        ``residual_w`` the residual term is the 1x1 map ``residual_w @ residual`` (its bias then
        comes in ``bias``, which replaces the convolution's own)."""
        return unchecked.temporal_conv(x, self.weight_t, self.kernel, self.stride,
                                       self.bias if bias is None else bias, residual,
                                       self.pads[0], self.pads[1], relu, residual_w=residual_w)


class _Block(nn.Module):
    def __init__(self, block, backend, fast, channels_last=False, fused=False):
        super().__init__()
        self.gcn = _Graph(block.gcn, backend, fast)
        self.tcn = _Temporal(block.tcn, channels_last, fused=fused and not channels_last)
        self.mode = block.residual_mode
        self.residual = _Temporal(block.residual) if block.residual is not None else None
        self.plain = backend == "reference"
        res = self.residual
        # a 1x1 stride-1 shortcut convolution is fused into the temporal kernel, with the two
        # biases summed once here (causal or not: a causal 1x1 stride-1 convolution is not
        # shifted). Fused, it also runs on the plan's own product, whose per-sample results do
        # not depend on the batch (oneDNN's convolution picks its blocking by batch size)
        self.fused_shortcut = (self.tcn.fused and res is not None and res.kernel == 1
                               and res.stride == 1)
        if self.fused_shortcut:
            self.fused_bias = _p(self.tcn.bias + res.bias, self.tcn.bias)
            self.fused_residual_w = _p(res.weight, res.weight)

    def to_bf16(self) -> None:
        """bfloat16 weights for the products of the fused calls (GLAGCNPlan's precision)."""
        self.gcn.to_bf16()
        if self.tcn.fused:
            self.tcn.weight_t.data = self.tcn.weight_t.data.bfloat16()
        if self.fused_shortcut:
            self.fused_residual_w.data = self.fused_residual_w.data.bfloat16()

    def forward(self, x: Tensor) -> Tensor:
        if self.tcn.fused:
            h = self.gcn(x).contiguous()
            if self.mode == "none":
                return self.tcn.fused_forward(h, None, True)
            if self.mode == "identity":
                return self.tcn.fused_forward(h, x.contiguous(), True)
            if self.fused_shortcut:
                return self.tcn.fused_forward(h, x.contiguous(), True, self.fused_residual_w,
                                              self.fused_bias)
            return self.tcn.fused_forward(h, self.residual(x).contiguous(), True)
        y = self.tcn(self.gcn(x))
        if self.mode == "none":
            return F.relu(y) if self.plain else y.relu_()
        r = x if self.mode == "identity" else self.residual(x)
        if self.plain:
            return F.relu(y + r)
        return _add_relu_(y, r)


class _Stage(nn.Module):
    def __init__(self, stage, backend, fast, channels_last=False, fused=False):
        super().__init__()
        self.block1 = _Block(stage.block1, backend, fast, channels_last, fused)
        self.block2 = _Block(stage.block2, backend, fast, channels_last, fused)
        self.pool, self.offset = stage.pool, stage.offset
        self.plain = backend == "reference"

    def forward(self, x: Tensor) -> Tensor:
        r = x[:, :, self.offset::3]
        y = self.block2(self.block1(x))
        if self.pool:
            y = F.avg_pool2d(y, (3, 1), stride=(3, 1))
        return y + r if self.plain else y.add_(r)


PRECISIONS = ("float32", "bf16")


def _check_precision(precision) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    return precision


def _unchecked_for(device: torch.device) -> bool:
    """Whether the automatic backend of ``device`` is a compiled one that
    :mod:`posekernels.ops.unchecked` can call directly."""
    return (ops.available_backends(device)[0] in ("cpu", "cuda")
            and unchecked.available(device, "adaptive_graph_conv")
            and unchecked.available(device, "joint_linear"))


class GLAGCNPlan(nn.Module):
    """A folded, eval-only GLA-GCN: ``forward(x (N, T, V, 2)) -> (N, V, 3)`` (see module doc).

    ``backend``: None (the automatic backend of :mod:`posekernels.ops`, through
    :mod:`posekernels.ops.unchecked` when it is ``cpu``/``cuda``: then ``unchecked`` is True), or
    a backend name of :mod:`posekernels.ops` (``"reference"`` for plain traceable PyTorch).
    """

    def __init__(self, model, backend: str | None = None, channels_last: bool | None = None,
                 precision: str = "float32"):
        super().__init__()
        ref = next(model.parameters())
        fast = backend is None and _unchecked_for(ref.device)
        self.backend = backend
        self.unchecked = fast
        self.plain = backend == "reference"
        self.receptive_field = model.receptive_field
        self.causal = model.causal
        self.num_joints = model.num_joints
        self.skeleton = model.skeleton
        v = model.num_joints
        self.window_norm, self.root = model.window_norm, model.root
        cin = model.in_channels
        scale, shift = _bn_affine(model.data_bn)  # channel = joint * cin + coordinate
        self.register_buffer("in_scale", scale.view(v, cin).t().reshape(1, cin, 1, v).to(ref)
                             .contiguous())
        self.register_buffer("in_shift", shift.view(v, cin).t().reshape(1, cin, 1, v).to(ref)
                             .contiguous())
        # channels_last: the (9, 1) convolutions alone run faster in channels-last layout on the
        # CPU, but the layout copies around the graph convolutions (which take NCHW) cancel the
        # gain end to end, so it is off by default
        self.channels_last = bool(channels_last)
        cl = self.channels_last
        # the compiled temporal convolution (Winograd, fused residual + ReLU) for float32/64 CPU
        # models whose graph convolutions run unchecked too
        fused = (fast and unchecked.available(ref.device, "temporal_conv")
                 and ref.dtype in (torch.float32, torch.float64))
        self.fused_temporal = fused
        self.expand = _Block(model.expand, backend, fast, cl, fused)
        self.global_blocks = nn.ModuleList([_Block(b, backend, fast, cl, fused)
                                            for b in model.global_blocks])
        self.stages = nn.ModuleList([_Stage(s, backend, fast, cl, fused) for s in model.stages])
        head = model.head
        self.head_kind = head.kind
        self.out_features = head.out_features
        def f64(t):
            return None if t is None else t.detach().double()

        if head.kind == "fc":  # (V*C, V*out) as a single "joint"
            W, b = f64(head.W_shared)[None], f64(head.b_shared)[None]
        else:  # "icl" (both groups, blended) or "shared" (the shared group on every joint)
            W, b = ops.blend_joint_weights(f64(head.W_joint), f64(head.b_joint),
                                           f64(head.W_shared), f64(head.b_shared), head.lam, v)
        self.head_W, self.head_b = _p(W, ref), _p(b, ref)
        self.precision = _check_precision(precision)
        if precision == "bf16":
            if not (fused and ref.dtype == torch.float32 and ref.device.type == "cpu"):
                raise ValueError(
                    "precision='bf16' needs a float32 model on the CPU with the compiled cpu "
                    "kernels (backend=None, the extension built); got a "
                    f"{ref.dtype} model on {ref.device}, backend={backend!r}")
            for blk in self._blocks():
                blk.to_bf16()

    def _blocks(self):
        yield self.expand
        yield from self.global_blocks
        for stage in self.stages:
            yield stage.block1
            yield stage.block2

    def forward(self, x: Tensor) -> Tensor:
        if self.unchecked and torch.is_autocast_enabled(x.device.type):
            # the unchecked kernels take one dtype: under autocast the plan runs in the
            # model's own dtype (its folded weights'), autocast off
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.to(self.in_scale.dtype))
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        n = x.shape[0]
        if self.window_norm:
            x = window_input(x, self.root)
        h = x.permute(0, 3, 1, 2) * self.in_scale + self.in_shift  # (N, 2, T, V)
        h = h.contiguous()
        h = self.expand(h)
        for blk in self.global_blocks:
            h = blk(h)
        for stage in self.stages:
            h = stage(h)
        feat = h[:, :, 0].transpose(1, 2)  # (N, V, C)
        if self.head_kind == "fc":
            feat = feat.reshape(n, 1, -1)
        if self.plain:
            y = reference.joint_linear(feat, self.head_W, self.head_b)
        elif self.unchecked:
            y = unchecked.joint_linear(feat.contiguous(), self.head_W, self.head_b)
        else:
            y = ops.grouped_joint_linear(feat, self.head_W, self.head_b, backend=self.backend)
        return y.reshape(n, self.num_joints, self.out_features)


class ModulePlan(nn.Module):
    """Any other model, called as it is in eval mode: ``(N, T, V, 2) -> (N, V, 3)`` (windowed
    models, output ``model(x)[:, 0]``) or ``(N, 1, V, 2) -> (N, V, 3)`` (single-frame models)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.windowed = hasattr(model, "receptive_field")
        self.receptive_field = int(getattr(model, "receptive_field", 1))
        self.causal = bool(getattr(model, "causal", False))

    def forward(self, x: Tensor) -> Tensor:
        if self.windowed:
            return self.model(x)[:, 0]
        return self.model(x[:, 0])


def build_plan(model: nn.Module, *, fold: bool = True, backend: str | None = None,
               channels_last: bool | None = None, precision: str = "float32") -> nn.Module:
    """The inference plan of ``model`` (see the module doc). ``fold=False`` always returns a
    :class:`ModulePlan` (the model's own forward). ``precision="bf16"``: bfloat16 weight products
    (a folded float32 GLA-GCN on the CPU only; ValueError otherwise)."""
    from ..models import GLAGCN

    _check_precision(precision)
    if fold and isinstance(model, GLAGCN):
        return GLAGCNPlan(model, backend=backend, channels_last=channels_last,
                          precision=precision).eval()
    if precision != "float32":
        raise ValueError(f"precision={precision!r} needs a folded GLA-GCN plan (fold=True and a "
                         f"GLAGCN model), got fold={fold} and {type(model).__name__}")
    return ModulePlan(model).eval()

"""The operations of graph-convolutional pose lifting, with interchangeable backends.

Every model in posekernels goes through these functions: :func:`adaptive_graph_conv` and
:func:`grouped_joint_linear` (differentiable, every backend), :func:`temporal_conv` (the
temporal convolution with a fused epilogue: one pass in the CPU inference plans, a Winograd
forward and backward in training), and the training epilogues :func:`dropout` (counter-based
masks) and :func:`batch_norm_act` (BatchNorm + dropout + residual + ReLU).
:func:`blend_joint_weights` folds the two weight groups of :func:`grouped_joint_linear` into one,
as its kernel backends do.

Backends:

* ``"reference"``: plain PyTorch (:mod:`posekernels.ops.reference`); the specification and the
  fallback; always available.
* ``"cpu"``: fused C++ forward and backward kernels (csrc/cpu) for CPU tensors.
* ``"triton"``: Triton forward and backward kernels for CUDA tensors (and, for testing, CPU
  tensors when ``TRITON_INTERPRET=1`` was set before triton was imported).
* ``"cuda"``: CUDA kernels (csrc/cuda) when the extension was built with CUDA.

``backend=None`` picks the first entry of :func:`available_backends` for the tensor's device;
:func:`use_backend` changes that choice for a block of code (for example a whole model).

:mod:`posekernels.ops.unchecked` calls the compiled kernels of the ``cpu`` and ``cuda`` backends
without the checks of these functions: the fast path of the inference plans
(:func:`posekernels.inference.build_plan`), for callers that prepared their arguments once.
"""
from __future__ import annotations

import contextlib
import os
import threading
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext
from . import _validate, reference, unchecked
from ._autograd import bn_act_dtype as _bn_act_dtype

__all__ = [
    "adaptive_graph_conv",
    "grouped_joint_linear",
    "temporal_conv",
    "dropout",
    "batch_norm_act",
    "blend_joint_weights",
    "available_backends",
    "use_backend",
    "BACKENDS",
]

BACKENDS = ("cuda", "triton", "cpu", "reference")

# The largest kernel the compiled temporal convolution accepts (python_api/checks.h).
_TCONV_MAX_KERNEL = 1 << 20

_local = threading.local()

# dtypes of the cpu backend's training kernels (temporal convolution, dropout, BatchNorm epilogue)
_EPILOGUE_DTYPES = (torch.float32, torch.float64)
# the Triton backend's dropout also takes 16-bit tensors (computed in fp32)
_DROPOUT_TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _load_triton():
    try:
        from . import _triton
    except Exception:  # triton missing or broken: the backend is simply unavailable
        return None
    return _triton


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# Resolved once at import (not lazily inside a call, which torch.compile could be tracing), and
# only where triton can run: with a CUDA device, or under the interpreter. Importing triton
# costs about a second, which CPU-only users are spared.
_TRITON = _load_triton() if (torch.cuda.is_available() or _triton_interpreting()) else None


def _triton_module():
    """The Triton backend module, or None when triton cannot be used here."""
    return _TRITON


def available_backends(device: torch.device | str | None = None) -> list[str]:
    """Backends that can run on ``device`` (default: CPU), fastest first."""
    device = torch.device("cpu" if device is None else device)
    compiled = _ext.compiled_backends()
    out = []
    if device.type == "cuda":
        if "cuda" in compiled:
            out.append("cuda")
        if _triton_module() is not None:
            out.append("triton")
        out.append("reference")
    elif device.type == "cpu":
        if "cpu" in compiled:
            out.append("cpu")
        out.append("reference")
        if _triton_interpreting() and _triton_module() is not None:
            out.append("triton")
    else:
        out.append("reference")
    return out


@contextlib.contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Make ``name`` the default backend of every op inside a ``with`` block (None: automatic).

    >>> with posekernels.ops.use_backend("reference"):
    ...     y = model(x)
    """
    if name is not None and name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {name!r}")
    previous = getattr(_local, "backend", None)
    _local.backend = name
    try:
        yield
    finally:
        _local.backend = previous


def _resolve(backend: str | None, device: torch.device) -> str:
    if backend is None:
        backend = getattr(_local, "backend", None)
    available = available_backends(device)
    if backend is None:
        return available[0]
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend not in available:
        raise ValueError(f"backend {backend!r} is not available for {device.type} tensors here; "
                         f"available: {available}")
    return backend


def _kernels(backend: str):
    return _triton_module() if backend == "triton" else unchecked


def _autocast_dtype(x) -> torch.dtype | None:
    """The autocast dtype that applies to ``x``'s device, or None (autocast off, or no tensor)."""
    if not isinstance(x, Tensor):
        return None
    kind = x.device.type
    if kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return None


def _autocast(dtype: torch.dtype | None, *tensors):
    """Autocast's cast of an op's arguments: with autocast on (``dtype`` not None), every float16,
    bfloat16 or float32 tensor becomes ``dtype`` (float64 tensors, like under torch's own autocast,
    and non-tensors are left alone). This runs before the arguments are validated, so a model's
    constant float32 graph ``A`` and its float32 parameters meet a bfloat16 activation in one
    dtype, and the op runs in the autocast dtype on every backend (the kernels take one dtype).
    The casts are differentiable: parameters get their gradients in their own dtype."""
    if dtype is None:
        return tensors
    return tuple(t.to(dtype) if isinstance(t, Tensor) and t.dtype in _AUTOCAST_ELIGIBLE else t
                 for t in tensors)


_AUTOCAST_ELIGIBLE = (torch.float16, torch.bfloat16, torch.float32)


def _autocast_compute_dtype(backend: str, x) -> torch.dtype | None:
    """The dtype an op's arguments are cast to under autocast: the autocast dtype, but float32
    on the ``cpu`` backend (its graph and epilogue kernels compute in float32 whatever the
    dtype, so a 16-bit round trip would only add conversions and rounding); None without
    autocast."""
    dtype = _autocast_dtype(x)
    return torch.float32 if dtype is not None and backend == "cpu" else dtype


# Whether this CPU multiplies bfloat16 pairs natively (AVX-512 BF16), read once from the extension.
_CPU_BF16 = bool(_ext.has_extension() and _ext._C.build_info().get("cpu_bf16") == "avx512_bf16")


def _bf16_products(backend: str, x: Tensor) -> bool:
    """Whether the ``cpu`` backend's graph op runs its weight products in bfloat16: under bf16
    autocast, for a float32 ``x`` (after autocast's cast; float64 stays float64), on a CPU with
    AVX-512 BF16 (elsewhere bfloat16 products would be emulated, slower than the float32
    ones)."""
    return (backend == "cpu" and _CPU_BF16 and x.dtype == torch.float32
            and _autocast_dtype(x) == torch.bfloat16)


def _bf16_weights(*tensors):
    """The weights of a bf16-products call: bfloat16 copies (differentiable casts)."""
    return tuple(t.to(torch.bfloat16) if t is not None else None for t in tensors)


def _contiguous(*tensors):
    return tuple(t.contiguous() if t is not None else None for t in tensors)


def adaptive_graph_conv(x: Tensor, A: Tensor, W: Tensor, bias: Tensor | None = None,
                        B: Tensor | None = None, theta_w: Tensor | None = None,
                        theta_b: Tensor | None = None, phi_w: Tensor | None = None,
                        phi_b: Tensor | None = None, *, backend: str | None = None) -> Tensor:
    """Adaptive graph convolution: the graph part of an AGCN unit, all K partitions at once.

    Shapes: x (N, Cin, T, V); A and B (K, V, V); W (K, Cout, Cin); bias (K, Cout);
    theta_w, phi_w (K, Ce, Cin); theta_b, phi_b (K, Ce). Returns y (N, Cout, T, V)::

        y[n,o,t,w] = sum_k ( sum_c W[k,o,c] * sum_v x[n,c,t,v] * M[n,k,v,w] + bias[k,o] )
        M[n,k]     = A[k] + B[k] + C[n,k]
        C[n,k]     = softmax over v of S[n,k,v,w] / (Ce*T)
        S[n,k,v,w] = sum_{e,t} theta_k(x)[n,e,t,v] * phi_k(x)[n,e,t,w]

    where theta_k / phi_k are 1x1 convolutions (theta_w[k], theta_b[k]). Without theta_w/phi_w
    there is no attention term C; without B there is no B. Gradients flow to every argument
    except A, which is a constant graph: an ``A`` that requires grad (with grad mode on) raises
    ValueError on every backend, rather than silently getting no gradient. This equals the
    released GLA-GCN graph unit (conv_a = theta, conv_b = phi, PA = B, conv_d = W), summed over
    partitions.

    Under ``torch.autocast`` (for x's device) every float16/bfloat16/float32 argument is cast to
    the autocast dtype before the checks, so a float32 ``A`` or ``W`` meets a bfloat16 ``x``; the
    kernels then run in that dtype. The ``cpu`` backend is the exception: its kernels compute in
    float32 whatever the dtype, so under autocast it casts the arguments to float32 instead and
    returns float32 (as autocast's float32-policy ops do), which saves two conversions of the
    activations each way and their bfloat16 rounding (a bf16 autocast training step of the
    T = 81, C = 64 lifter about 9 % faster; benchmarks/RESULTS.md). Under bf16 autocast on a CPU
    with AVX-512 BF16 it also passes ``W``, ``theta_w`` and ``phi_w`` as bfloat16, which makes
    the kernels run the products with those weights (and, in the backward, the products that
    give their gradients) on bfloat16 operands with float32 sums, as autocast runs a matrix
    product; the joint mixing with ``M``, the attention's (V, V) products and ``B``'s gradient
    stay float32.
    """
    name = _resolve(backend, x.device) if isinstance(x, Tensor) else None
    args = _autocast(_autocast_compute_dtype(name, x), x, A, W, bias, B, theta_w, theta_b,
                     phi_w, phi_b)
    _validate.check_adaptive_graph_conv(*args)
    if name == "reference":
        return reference.adaptive_graph_conv(*args)
    if _bf16_products(name, args[0]):
        x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b = args
        W, theta_w, phi_w = _bf16_weights(W, theta_w, phi_w)
        args = (x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b)
    return _kernels(name).adaptive_graph_conv(*_contiguous(*args))


def blend_joint_weights(W_joint: Tensor | None, b_joint: Tensor | None,
                        W_shared: Tensor | None, b_shared: Tensor | None,
                        lam: float | Tensor, num_joints: int) -> tuple[Tensor, Tensor | None]:
    """The two weight groups of :func:`grouped_joint_linear` as one per-joint weight
    (V, C, D) and bias (V, D) (None without biases), ``V = num_joints``::

        W[v] = lam * W_joint[v] + (1 - lam) * W_shared
        b[v] = lam * b_joint[v] + (1 - lam) * b_shared

    so that ``grouped_joint_linear(x, ...)[..., v, :] == x[..., v, :] @ W[v] + b[v]``. A missing
    bias of a present group counts as zero; with one group only, that group is returned (the
    shared one expanded to every joint, without a copy) and ``lam`` is ignored. Differentiable
    (a tensor ``lam`` gets its gradient). Arguments are not checked here."""
    if W_joint is None:
        W = W_shared.expand(num_joints, -1, -1)
        return W, (None if b_shared is None else b_shared.expand(num_joints, -1))
    if W_shared is None:
        return W_joint, b_joint
    W = lam * W_joint + (1 - lam) * W_shared
    if b_joint is None and b_shared is None:
        return W, None
    bj = b_joint if b_joint is not None else W_joint.new_zeros(W_joint.shape[0], W_joint.shape[2])
    bs = b_shared if b_shared is not None else W_shared.new_zeros(W_shared.shape[1])
    return W, lam * bj + (1 - lam) * bs


def grouped_joint_linear(x: Tensor, W_joint: Tensor | None = None, b_joint: Tensor | None = None,
                         W_shared: Tensor | None = None, b_shared: Tensor | None = None,
                         lam: float | Tensor = 0.5, *, backend: str | None = None) -> Tensor:
    """Grouped per-joint linear map (GLA-GCN's individually connected layer).

    Shapes: x (..., V, C); W_joint (V, C, D); b_joint (V, D); W_shared (C, D); b_shared (D,);
    lam a float in [0, 1] or a 0-dim tensor (learnable: it receives a gradient). Returns
    (..., V, D)::

        y[..., v, :] = lam * (x[..., v, :] @ W_joint[v] + b_joint[v])
                       + (1 - lam) * (x[..., v, :] @ W_shared + b_shared)

    With only one weight group given, that group alone is used (lam is ignored). The kernel
    backends blend the two groups into one per-joint weight first (:func:`blend_joint_weights`,
    a V*C*D elementwise op) and run a single fused per-joint product. Under ``torch.autocast``
    the arguments are cast to the autocast dtype first, as in :func:`adaptive_graph_conv`.
    """
    x, W_joint, b_joint, W_shared, b_shared = _autocast(_autocast_dtype(x), x, W_joint, b_joint,
                                                        W_shared, b_shared)
    _validate.check_grouped_joint_linear(x, W_joint, b_joint, W_shared, b_shared, lam)
    name = _resolve(backend, x.device)
    if name == "reference":
        return reference.grouped_joint_linear(x, W_joint, b_joint, W_shared, b_shared, lam)
    v, c = x.shape[-2], x.shape[-1]
    W, b = blend_joint_weights(W_joint, b_joint, W_shared, b_shared, lam, v)
    y = _kernels(name).joint_linear(*_contiguous(x.reshape(-1, v, c), W, b))
    return y.reshape(*x.shape[:-1], W.shape[-1])


def temporal_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, *,
                  residual: Tensor | None = None, padding=None, stride: int = 1,
                  relu: bool = False, backend: str | None = None) -> Tensor:
    """Temporal convolution with a fused epilogue.

    Shapes: x (N, C, T, V); weight (O, C, k) or (O, C, k, 1); bias (O,); residual
    (N, O, T_out, V). ``padding``: zero frames added before and after (an int for both sides, a
    pair (left, right), or None for (k - 1) // 2 on each side). Returns (N, O, T_out, V) with
    T_out = (T + left + right - k) // stride + 1::

        y = act(conv2d(pad(x), weight (k, 1), stride (stride, 1)) + bias + residual)

    with act = ReLU if ``relu``.
    This is the (9, 1) convolution (+ folded BatchNorm) + shortcut + ReLU that ends every
    GLA-GCN block (stride 3 in the strided modules). The ``cpu`` backend runs it with a
    Winograd F(4, 3) kernel (a strided convolution is run as a stride-1 one over the stride's
    phases; half the multiply-adds of a direct convolution at k = 9; in float32 each output's
    error stays within a few 1e-6 of the sum of its terms' magnitudes, against about 1e-7 for a
    direct convolution): in one pass with the epilogue when nothing needs a gradient; when
    something does (training, float32/float64), through a differentiable op whose backward
    computes the input gradient on the same Winograd kernel (phase by phase for a stride) and
    the weight gradient with oneDNN (``at::convolution_backward``; the epilogue then runs as
    ordinary autograd ops). Other backends, kernels of fewer than 3 taps per stride phase
    (for gradients: k < 3 * stride), a padding of k frames or more on either side, and 16-bit
    inputs that require grad use the reference formulation (``F.conv2d`` + add + ReLU: cuDNN
    on CUDA). Under autocast it runs in the autocast dtype.
    """
    pads = _validate.temporal_padding(padding, weight.shape[2] if isinstance(weight, Tensor)
                                      and weight.dim() >= 3 else 1)
    x, weight, bias, residual = _autocast(_autocast_dtype(x), x, weight, bias, residual)
    _validate.check_temporal_conv(x, weight, bias, residual, pads, stride)
    name = _resolve(backend, x.device)
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, weight, bias, residual))
    k = weight.shape[2]
    # the fused kernel takes fewer than 3 taps per phase nowhere, and (like the raw op's checks)
    # no padding of k frames or more and no kernel above 2^20 taps
    if name != "cpu" or -(-k // stride) < 3 or max(pads) >= k or k > _TCONV_MAX_KERNEL:
        return reference.temporal_conv(x, weight, bias, residual, pads, relu, stride)
    if needs_grad:
        if k // stride < 3 or x.dtype not in _EPILOGUE_DTYPES:
            return reference.temporal_conv(x, weight, bias, residual, pads, relu, stride)
        y = unchecked.temporal_conv_train(x.contiguous(), weight.contiguous(),
                                          None if bias is None else bias.contiguous(), stride,
                                          pads[0], pads[1])
        if residual is not None:
            y = y + residual
        return F.relu(y) if relu else y
    weight_t = unchecked.temporal_conv_weight(weight, stride)
    return unchecked.temporal_conv(x, weight_t, k, stride, bias, residual, pads[0], pads[1], relu)


# ----------------------------------------------------------------------------- training epilogues


def _draw_seed(generator: torch.Generator | None) -> Tensor:
    """A 64-bit seed for the counter-based masks, drawn from torch's (CPU) generator, so that
    ``torch.manual_seed`` makes the masks reproducible."""
    return torch.randint(-(2 ** 63), 2 ** 63 - 1, (1,), dtype=torch.int64, generator=generator)


def _check_probability(p, name: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"{name} must be a number in [0, 1), got {p!r}")
    return float(p)


def _epilogue_kernels(backend: str | None, t: Tensor, triton_dtypes=_EPILOGUE_DTYPES):
    """The module whose ``dropout`` / ``batch_norm_act`` run ``t`` on this backend, or None
    (then the reference formulation runs)."""
    name = _resolve(backend, t.device)
    if name in ("cpu", "cuda") and t.dtype in _EPILOGUE_DTYPES:
        return unchecked
    if name == "triton" and t.dtype in triton_dtypes:
        return _triton_module()
    return None


def _widened(backend: str | None, t: Tensor) -> bool:
    """Whether the cpu backend runs the fused epilogue of 16-bit ``t`` on a float32 copy (its
    kernels take float32/float64; bf16 autocast training would otherwise fall back to torch's
    ``bernoulli_`` dropout and unfused BatchNorm)."""
    return t.dtype in _HALF_DTYPES and _resolve(backend, t.device) == "cpu"


def dropout(x: Tensor, p: float = 0.5, training: bool = True, *,
            generator: torch.Generator | None = None, backend: str | None = None) -> Tensor:
    """Dropout: each element is zeroed with probability ``p`` and the rest scaled by
    ``1 / (1 - p)`` when ``training`` (the identity otherwise), as ``torch.nn.functional.dropout``.

    The ``cpu`` and ``cuda`` backends (float32/float64) and the ``triton`` backend (float16,
    bfloat16, float32, float64) draw the mask from a counter-based generator instead of a
    stored Bernoulli tensor: element ``i = 64 b + 16 w + j`` (w < 4, j < 16) of the contiguous
    tensor is kept when word w of Philox4x32-10(key = seed, counter = 16 b + j) is below
    (1 - p) * 2^32, with a 64-bit seed drawn from ``generator`` (default: torch's global CPU
    generator, so ``torch.manual_seed`` reproduces it; the same seed gives the same mask on
    every backend). One pass; the backward regenerates the mask from the seed, so nothing is
    saved. On the ``cpu`` backend a float16/bfloat16 ``x`` is converted to float32 and masked
    there (the same mask); the result is converted back to x's dtype, except under
    ``torch.autocast`` (bf16 autocast training), where it stays float32 like the backend's graph
    op (:func:`adaptive_graph_conv`). Other backends, devices and dtypes use
    ``torch.nn.functional.dropout`` (same distribution, different random stream; ``generator``
    is then not used)."""
    p = _check_probability(p, "p")
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not training or p == 0.0:
        return x
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got dtype {x.dtype}")
    kernels = _epilogue_kernels(backend, x, _DROPOUT_TRITON_DTYPES)
    if kernels is None and _widened(backend, x):
        y = unchecked.dropout(x.contiguous().float(), p, _draw_seed(generator))
        return y if _autocast_dtype(x) is not None else y.to(x.dtype)
    if kernels is None:
        return F.dropout(x, p, True)
    return kernels.dropout(x.contiguous(), p, _draw_seed(generator))


def batch_norm_act(z: Tensor, weight: Tensor | None, bias: Tensor | None,
                   running_mean: Tensor | None, running_var: Tensor | None, training: bool,
                   momentum: float = 0.1, eps: float = 1e-5, *, dropout: float = 0.0,
                   residual: Tensor | None = None, relu: bool = False,
                   generator: torch.Generator | None = None,
                   backend: str | None = None, out_dtype: torch.dtype | None = None) -> Tensor:
    """BatchNorm + dropout + residual add + ReLU, the epilogue of every GLA-GCN unit::

        y = act(dropout(batch_norm(z)) + residual)

    ``z`` (N, C, ...); ``weight``, ``bias``, ``running_mean``, ``running_var`` (C,) or None;
    the BatchNorm arguments mean what they mean to ``torch.nn.functional.batch_norm``
    (``training``: normalise with the batch statistics over every dimension but C and update
    the running statistics in place with ``momentum``, the variance unbiased, as
    ``nn.BatchNorm2d`` does; else normalise with the running statistics). ``dropout`` (a
    probability in [0, 1)) applies only when ``training``; ``residual`` is shaped like ``z``;
    act = ReLU when ``relu``.

    The ``cpu`` backend runs training-mode calls on float32/float64 CPU tensors fused, in two
    sweeps over the tensor in memory order each way (statistics, then the elementwise pass),
    with :func:`dropout`'s counter-based masks (seed from ``generator``) so no mask is stored;
    the ``cuda`` and ``triton`` backends do the same
    on float32/float64 tensors with a statistics kernel (per-channel splits, merged) and an
    elementwise kernel each way, and the same masks. On the ``cpu`` backend a bfloat16 ``z``
    (bf16 autocast training: a convolution's bf16 output meeting float32 BatchNorm parameters)
    runs fused as it is: the kernels read its bf16 elements and compute in float32 (with float32
    copies of the other tensors where they are 16-bit), and its gradient is rounded to bfloat16
    once; a float16 ``z`` runs on a float32 copy. The result is converted back to z's dtype as
    ``F.batch_norm`` returns it, except under ``torch.autocast``, where it stays float32 like
    the backend's graph op. Everything
    else (evaluation, 16-bit dtypes on the other backends, ``backend="reference"``) runs
    ``F.batch_norm`` + ``F.dropout`` + add + ReLU.

    ``out_dtype`` (a floating dtype, default None: as above) is the result's dtype. When the
    cpu kernels compute in float32 and ``out_dtype`` is ``torch.bfloat16`` they write y in
    bfloat16 themselves, rounded once, and their backward reads it and its bfloat16 gradient
    directly (bf16 autocast: a result that feeds a bf16 convolution, which would convert it
    anyway); otherwise the result is converted.
    """
    p = _check_probability(dropout, "dropout")
    if out_dtype is not None and not (isinstance(out_dtype, torch.dtype)
                                      and out_dtype.is_floating_point):
        raise TypeError(f"out_dtype must be None or a floating-point torch.dtype, got {out_dtype!r}")
    if not isinstance(z, Tensor) or z.dim() < 2:
        raise ValueError("z must be a tensor of shape (N, C, ...), got "
                         f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) \
            or not 0.0 <= float(momentum) <= 1.0:
        raise ValueError(f"momentum must be a number in [0, 1], got {momentum!r}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not float(eps) > 0.0:
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    if residual is not None and (not isinstance(residual, Tensor) or residual.shape != z.shape):
        raise ValueError(f"residual must have the shape of z {tuple(z.shape)}, got "
                         f"{tuple(residual.shape) if isinstance(residual, Tensor) else residual!r}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must be given together")
    if not training and running_mean is None:
        raise ValueError("training=False needs running_mean and running_var")
    c = z.shape[1]
    for name, t in (("weight", weight), ("bias", bias), ("running_mean", running_mean),
                    ("running_var", running_var)):
        if t is not None and (not isinstance(t, Tensor) or tuple(t.shape) != (c,)):
            raise ValueError(f"{name} must have shape (C,) = ({c},), got "
                             f"{tuple(t.shape) if isinstance(t, Tensor) else t!r}")
    if training and z.numel() // max(c, 1) < 2:
        raise ValueError(f"z needs more than one value per channel when training, got shape "
                         f"{tuple(z.shape)}")
    kernels = _epilogue_kernels(backend, z) if training else None
    default_dtype = z.dtype
    if (training and kernels is None and _widened(backend, z)
            and all(t is None or (t.device == z.device
                                  and t.dtype in (torch.float16, torch.bfloat16, torch.float32))
                    for t in (weight, bias, residual))):
        kernels = unchecked
        if _autocast_dtype(z) is not None:
            default_dtype = torch.float32
        # the kernels read a bfloat16 z as it is; a float16 one goes through a float32 copy
        weight, bias, residual = (None if t is None else t.float() for t in (weight, bias, residual))
        z = z if z.dtype == torch.bfloat16 else z.float()
    compute_dtype = _bn_act_dtype(z.dtype)
    if not (kernels is not None
            and all(t is None or (t.dtype == compute_dtype and t.device == z.device)
                    for t in (weight, bias, residual))):
        y = F.batch_norm(z, running_mean, running_var, weight, bias, training, float(momentum),
                         float(eps))
        if training and p > 0.0:
            y = F.dropout(y, p, True)
        if residual is not None:
            y = y + residual
        y = F.relu(y) if relu else y
        return y if out_dtype is None else y.to(out_dtype)
    written = (torch.bfloat16 if out_dtype == torch.bfloat16 and kernels is unchecked
               and z.device.type == "cpu" and compute_dtype == torch.float32 else None)
    args = (z.contiguous(), weight, bias, None if residual is None else residual.contiguous(), p,
            _draw_seed(generator) if p > 0.0 else _NO_SEED, float(eps), bool(relu))
    y, mean, var = (kernels.batch_norm_act(*args) if written is None
                    else kernels.batch_norm_act(*args, written))
    if running_mean is not None:
        m = float(momentum)
        count = z.numel() // c
        with torch.no_grad():
            running_mean.mul_(1.0 - m).add_(mean.to(running_mean.dtype), alpha=m)
            running_var.mul_(1.0 - m).add_(var.to(running_var.dtype), alpha=m * count / (count - 1))
    return y.to(out_dtype or default_dtype)


_NO_SEED = torch.zeros(1, dtype=torch.int64)

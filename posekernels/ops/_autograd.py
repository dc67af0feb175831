"""Fake (meta) kernels and autograd formulas shared by every kernel backend.

Each kernel backend (the C++ ops ``posekernels::agc_forward`` & co. for cpu/cuda, the Triton
custom ops ``posekernels::agc_forward_triton`` & co.) implements the same four schemas:

``agc_forward(Tensor x, Tensor A, Tensor W, Tensor? bias, Tensor? B, Tensor? theta_w,
Tensor? theta_b, Tensor? phi_w, Tensor? phi_b) -> (Tensor y, Tensor attn)``
    x (N, Cin, T, V) contiguous; y (N, Cout, T, V); attn (N, K, V, V) holds the softmax term C
    when theta_w is given (saved for the backward), else an empty tensor of shape (0,). On the
    cpu backend W, and theta_w with phi_w, may be bfloat16 with a float32 x (every other
    tensor float32): their products then run on bfloat16 operands with float32 sums, and the
    backward returns their gradients in bfloat16 (what ``adaptive_graph_conv`` passes under
    bf16 autocast on CPUs with AVX-512 BF16).

``agc_backward(Tensor grad_y, Tensor x, Tensor A, Tensor W, Tensor? bias, Tensor? B,
Tensor? theta_w, Tensor? theta_b, Tensor? phi_w, Tensor? phi_b, Tensor attn)
-> (Tensor gx, Tensor gW, Tensor gbias, Tensor gB, Tensor gtheta_w, Tensor gtheta_b,
Tensor gphi_w, Tensor gphi_b)``
    Gradients with the shapes of their inputs; the gradient of an absent input is an empty
    tensor of shape (0,). A is a constant: a forward with an ``A`` that requires grad raises
    ValueError (it would otherwise silently get no gradient).

``jl_forward(Tensor x, Tensor W, Tensor? b) -> Tensor``
    x (M, V, C), W (V, C, D), b (V, D): y[m, v] = x[m, v] @ W[v] + b[v], shape (M, V, D).

``jl_backward(Tensor grad_y, Tensor x, Tensor W, bool has_bias) -> (Tensor gx, Tensor gW, Tensor gb)``
    gb is empty (shape (0,)) when has_bias is false.

This module registers, for one backend's ops, the fake kernels (so torch.compile and opcheck can
trace them) and the autograd formula that calls the backend's own backward op.
"""
from __future__ import annotations

import torch
from torch import Tensor

_EMPTY_SHAPE = (0,)


def _empty_like(ref: Tensor) -> Tensor:
    return ref.new_empty(_EMPTY_SHAPE)


def _grad_or_empty(t: Tensor | None, ref: Tensor) -> Tensor:
    return torch.empty_like(t) if t is not None else _empty_like(ref)


def register_agc(forward: str, backward: str) -> None:
    """Register fake kernels and autograd for an adaptive-graph-conv forward/backward op pair."""

    @torch.library.register_fake(forward)
    def _fake_forward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b):
        n, _, t, v = x.shape
        y = x.new_empty((n, W.shape[1], t, v))
        attn = x.new_empty((n, A.shape[0], v, v)) if theta_w is not None else _empty_like(x)
        return y, attn

    @torch.library.register_fake(backward)
    def _fake_backward(grad_y, x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, attn):
        return (torch.empty_like(x), torch.empty_like(W), _grad_or_empty(bias, x),
                _grad_or_empty(B, x), _grad_or_empty(theta_w, x), _grad_or_empty(theta_b, x),
                _grad_or_empty(phi_w, x), _grad_or_empty(phi_b, x))

    backward_op = _resolve(backward)

    def setup_context(ctx, inputs, output):
        x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b = inputs
        if A.requires_grad:  # the formula has no gradient for A: refuse rather than drop it
            raise ValueError(f"{forward}: A requires grad, but A is a constant graph and gets no "
                             "gradient; pass A.detach() (a learned graph belongs in B)")
        _, attn = output
        ctx.has = tuple(t is not None for t in (bias, B, theta_w, theta_b, phi_w, phi_b))
        ctx.save_for_backward(x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, attn)
        ctx.mark_non_differentiable(attn)

    def backward_fn(ctx, grad_y, _grad_attn):
        x, A, W, bias, B, theta_w, theta_b, phi_w, phi_b, attn = ctx.saved_tensors
        grads = backward_op(grad_y.contiguous(), x, A, W, bias, B, theta_w, theta_b, phi_w,
                            phi_b, attn)
        gx, gW, gbias, gB, gtw, gtb, gpw, gpb = grads
        opt = [g if has else None for g, has in zip((gbias, gB, gtw, gtb, gpw, gpb), ctx.has)]
        gbias, gB, gtw, gtb, gpw, gpb = opt
        return gx, None, gW, gbias, gB, gtw, gtb, gpw, gpb

    torch.library.register_autograd(forward, backward_fn, setup_context=setup_context)


def register_jl(forward: str, backward: str) -> None:
    """Register fake kernels and autograd for a per-joint-linear forward/backward op pair."""

    @torch.library.register_fake(forward)
    def _fake_forward(x, W, b):
        return x.new_empty((x.shape[0], x.shape[1], W.shape[2]))

    @torch.library.register_fake(backward)
    def _fake_backward(grad_y, x, W, has_bias):
        gb = x.new_empty((W.shape[0], W.shape[2])) if has_bias else _empty_like(x)
        return torch.empty_like(x), torch.empty_like(W), gb

    backward_op = _resolve(backward)

    def setup_context(ctx, inputs, output):
        x, W, b = inputs
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, W)

    def backward_fn(ctx, grad_y):
        x, W = ctx.saved_tensors
        gx, gW, gb = backward_op(grad_y.contiguous(), x, W, ctx.has_bias)
        return gx, gW, (gb if ctx.has_bias else None)

    torch.library.register_autograd(forward, backward_fn, setup_context=setup_context)


def register_dropout(op: str) -> None:
    """Fake kernel and autograd of ``dropout_apply(Tensor x, float p, Tensor seed) -> Tensor``:
    the mask is a function of (seed, element index), so the backward is the same op applied to
    the gradient with the same seed."""

    @torch.library.register_fake(op)
    def _fake(x, p, seed):
        return torch.empty_like(x, memory_format=torch.contiguous_format)

    op_fn = _resolve(op)

    def setup_context(ctx, inputs, output):
        _, ctx.p, seed = inputs
        ctx.save_for_backward(seed)

    def backward_fn(ctx, grad_y):
        (seed,) = ctx.saved_tensors
        return op_fn(grad_y.contiguous(), ctx.p, seed), None, None

    torch.library.register_autograd(op, backward_fn, setup_context=setup_context)


def bn_act_dtype(z_dtype: torch.dtype) -> torch.dtype:
    """The dtype of bn_act's y (by default), statistics and parameter gradients: float32 for a
    bfloat16 z (the cpu kernels read bf16 directly), else z's own."""
    return torch.float32 if z_dtype == torch.bfloat16 else z_dtype


def register_bn_act(forward: str, backward: str) -> None:
    """Fake kernels and autograd of the BatchNorm + dropout + residual + ReLU epilogue:

    ``bn_act_forward(Tensor z, Tensor? weight, Tensor? bias, Tensor? residual, float p,
    Tensor seed, float eps, bool relu) -> (Tensor y, Tensor mean, Tensor var)`` (batch
    statistics; mean and biased var (C,) are not differentiable) and ``bn_act_backward(Tensor
    grad_y, Tensor z, Tensor y, Tensor? weight, Tensor mean, Tensor var, float p, Tensor seed,
    float eps, bool relu, bool has_residual) -> (grad_z, grad_weight, grad_bias,
    grad_residual)`` (grad_residual empty (0,) without a residual). On the cpu kernels z may be
    bfloat16 with everything else float32: the statistics and every gradient but grad_z are
    then float32. ``out_dtype`` (a trailing ``ScalarType?``, default None: the compute dtype):
    the cpu kernels also write a bfloat16 y from a float32 computation, and their backward then
    takes y and grad_y in bfloat16."""

    @torch.library.register_fake(forward)
    def _fake_forward(z, weight, bias, residual, p, seed, eps, relu, out_dtype=None):
        c, dtype = z.shape[1], bn_act_dtype(z.dtype)
        return (torch.empty_like(z, dtype=out_dtype or dtype, memory_format=torch.contiguous_format),
                z.new_empty((c,), dtype=dtype), z.new_empty((c,), dtype=dtype))

    @torch.library.register_fake(backward)
    def _fake_backward(grad_y, z, y, weight, mean, var, p, seed, eps, relu, has_residual):
        c, dtype = z.shape[1], bn_act_dtype(z.dtype)
        gz = torch.empty_like(z, memory_format=torch.contiguous_format)
        gres = (torch.empty_like(gz, dtype=dtype) if has_residual
                else z.new_empty(_EMPTY_SHAPE, dtype=dtype))
        return gz, z.new_empty((c,), dtype=dtype), z.new_empty((c,), dtype=dtype), gres

    backward_op = _resolve(backward)

    def setup_context(ctx, inputs, output):
        z, weight, bias, residual, p, seed, eps, relu = inputs[:8]
        ctx.num_inputs = len(inputs)  # out_dtype may or may not be among them
        y, mean, var = output
        ctx.args = (p, eps, relu)
        ctx.has = (weight is not None, bias is not None, residual is not None)
        ctx.save_for_backward(z, y, weight, mean, var, seed)
        ctx.mark_non_differentiable(mean, var)

    def backward_fn(ctx, grad_y, _grad_mean, _grad_var):
        z, y, weight, mean, var, seed = ctx.saved_tensors
        p, eps, relu = ctx.args
        has_w, has_b, has_r = ctx.has
        gz, gw, gb, gr = backward_op(grad_y.contiguous(), z, y, weight, mean, var, p, seed, eps,
                                     relu, has_r)
        return (gz, gw if has_w else None, gb if has_b else None, gr if has_r else None
                ) + (None,) * (ctx.num_inputs - 4)

    torch.library.register_autograd(forward, backward_fn, setup_context=setup_context)


def register_tconv_train(forward: str, backward: str) -> None:
    """Fake kernels and autograd of the training temporal convolution:
    ``tconv_train_forward(Tensor x, Tensor weight, Tensor? bias, int stride, int pad_left,
    int pad_right) -> Tensor`` (y = conv(x) + bias, weight (O, C, k) or (O, C, k, 1)) and
    ``tconv_train_backward(Tensor grad_y, Tensor x, Tensor weight, int stride, int pad_left,
    int pad_right, bool has_bias) -> (grad_x, grad_weight, grad_bias or empty (0,))``."""

    @torch.library.register_fake(forward)
    def _fake_forward(x, weight, bias, stride, pad_left, pad_right):
        n, _, t, v = x.shape
        t_out = (t + pad_left + pad_right - weight.shape[2]) // stride + 1
        return x.new_empty((n, weight.shape[0], t_out, v))

    @torch.library.register_fake(backward)
    def _fake_backward(grad_y, x, weight, stride, pad_left, pad_right, has_bias):
        gb = x.new_empty((weight.shape[0],)) if has_bias else _empty_like(x)
        return (torch.empty_like(x, memory_format=torch.contiguous_format),
                torch.empty_like(weight, memory_format=torch.contiguous_format), gb)

    backward_op = _resolve(backward)

    def setup_context(ctx, inputs, output):
        x, weight, bias, stride, pad_left, pad_right = inputs
        ctx.args = (stride, pad_left, pad_right, bias is not None)
        ctx.save_for_backward(x, weight)

    def backward_fn(ctx, grad_y):
        x, weight = ctx.saved_tensors
        stride, pad_left, pad_right, has_bias = ctx.args
        gx, gw, gb = backward_op(grad_y.contiguous(), x, weight, stride, pad_left, pad_right,
                                 has_bias)
        return gx, gw, (gb if has_bias else None), None, None, None

    torch.library.register_autograd(forward, backward_fn, setup_context=setup_context)


def _resolve(qualname: str):
    ns, name = qualname.split("::")
    return getattr(getattr(torch.ops, ns), name).default

"""Triton kernels of the two ops (launched from :mod:`posekernels.ops._triton`).

Layout conventions
------------------
Every activation (x, y, grad_y, grad_x) is contiguous (N, C, T, V), so the plane of one sample
and one channel is a contiguous run of T * V elements. The kernels tile that plane along a flat
position axis ``p = t * V + v`` in tiles of ``BJ`` positions (a power of two >= 16) that hold
``FT = BJ // V`` whole frames; only the first ``LJ = FT * V`` slots of a tile are used, the rest
are masked. Inside a tile, a joint-mixing V x V matrix G acts on every frame separately, which is
one product with the block-diagonal (BJ, BJ) matrix ``bd(G)[(t, v), (t, w)] = G[v, w]`` gathered
into registers by :func:`_load_bd` (so V = 15..17 is padded in registers only, never in global
memory, and the position axis keeps contiguous, coalesced loads). Sums over the whole window of
products of two such tiles, ``D = sum_tiles a^T b`` (BJ, BJ), fold back to V x V with two small
selection-matrix products (:func:`_fold`).

Precision: products run on the input dtype (fp16/bf16 tensor cores, fp32 with the ``PREC``
input precision, fp64), accumulation in fp32 (fp64 for fp64 inputs: ``ACC``). Every tl.dot
passes ``out_dtype=ACC``: Triton 3.6 (the GPU machine's) defaults ``out_dtype`` to fp32 and
rejects an fp64 accumulator without it (an AssertionError in tl.dot); Triton 3.9 takes the
accumulator's dtype. ``make cuda-build-check`` compiles every kernel for sm_90 under both.
"""
from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _configs(gpu, interpreted):
    """A few configs on a GPU; exactly one under the interpreter (autotuning needs a driver)."""
    if INTERPRET:
        return [triton.Config(interpreted, num_warps=4, num_stages=1)]
    return [triton.Config(meta, num_warps=w, num_stages=s) for meta, w, s in gpu]


# ------------------------------------------------------------------------------------------------
# helpers


@triton.jit
def _load_bd(base, s_row, s_col, V, nvalid, offs_j):
    """Block-diagonal (BJ, BJ) tile: out[i, j] = base[v_i * s_row + v_j * s_col] when positions i
    and j lie in the same frame and both are < nvalid, else 0 (v_i = i % V)."""
    fi = offs_j // V
    vi = (offs_j % V).to(tl.int64)
    ok = (fi[:, None] == fi[None, :]) & (offs_j[:, None] < nvalid) & (offs_j[None, :] < nvalid)
    return tl.load(base + vi[:, None] * s_row + vi[None, :] * s_col, mask=ok, other=0.0)


@triton.jit
def _fold(D, V, LJ, offs_j, BV: tl.constexpr):
    """S[v, w] = sum over frames f of D[(f, v), (f, w)]: the V x V sum of the diagonal blocks."""
    offs_v = tl.arange(0, BV)
    fi = offs_j // V
    vi = offs_j % V
    used = offs_j < LJ
    diag = (fi[:, None] == fi[None, :]) & used[:, None] & used[None, :]
    Dm = tl.where(diag, D, 0.0)
    pt = ((vi[None, :] == offs_v[:, None]) & used[None, :]).to(D.dtype)  # (BV, BJ)
    p = ((vi[:, None] == offs_v[None, :]) & used[:, None]).to(D.dtype)  # (BJ, BV)
    return tl.dot(tl.dot(pt, Dm, input_precision="ieee"), p, input_precision="ieee")


@triton.jit
def _mix(w_base, s_r, s_c, r, r_ok, src, nin, TV, p, j_ok,
         BR: tl.constexpr, BC: tl.constexpr, BJ: tl.constexpr, ACC: tl.constexpr,
         PREC: tl.constexpr):
    """Channel mix of one tile: out[r, j] = sum_c w[r, c] * src[c, p_j] over all nin channels,
    with w[r, c] at w_base + r * s_r + c * s_c."""
    out = tl.zeros((BR, BJ), ACC)
    for c0 in range(0, nin, BC):
        c = c0 + tl.arange(0, BC).to(tl.int64)
        c_ok = c < nin
        w = tl.load(w_base + r[:, None] * s_r + c[None, :] * s_c,
                    mask=r_ok[:, None] & c_ok[None, :], other=0.0)
        s = tl.load(src + c[:, None] * TV + p[None, :], mask=c_ok[:, None] & j_ok[None, :],
                    other=0.0)
        out = tl.dot(w, s, out, input_precision=PREC, out_dtype=ACC)
    return out


@triton.jit
def _embed(x_n, tw_k, tb_k, pw_k, pb_k, e, e_ok, Cin, TV, p, j_ok,
           HAS_TB: tl.constexpr, HAS_PB: tl.constexpr, BE: tl.constexpr, BC: tl.constexpr,
           BJ: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """theta and phi embeddings (BE, BJ) of one tile (rows e of partition k), zero outside the
    valid positions; x is read once for both."""
    th = tl.zeros((BE, BJ), ACC)
    ph = tl.zeros((BE, BJ), ACC)
    for c0 in range(0, Cin, BC):
        c = c0 + tl.arange(0, BC).to(tl.int64)
        c_ok = c < Cin
        xt = tl.load(x_n + c[:, None] * TV + p[None, :], mask=c_ok[:, None] & j_ok[None, :],
                     other=0.0)
        wm = e_ok[:, None] & c_ok[None, :]
        tw = tl.load(tw_k + e[:, None] * Cin + c[None, :], mask=wm, other=0.0)
        pw = tl.load(pw_k + e[:, None] * Cin + c[None, :], mask=wm, other=0.0)
        th = tl.dot(tw, xt, th, input_precision=PREC, out_dtype=ACC)
        ph = tl.dot(pw, xt, ph, input_precision=PREC, out_dtype=ACC)
    if HAS_TB:
        th += tl.load(tb_k + e, mask=e_ok, other=0.0).to(ACC)[:, None]
    if HAS_PB:
        ph += tl.load(pb_k + e, mask=e_ok, other=0.0).to(ACC)[:, None]
    th = tl.where(j_ok[None, :], th, 0.0)
    ph = tl.where(j_ok[None, :], ph, 0.0)
    return th, ph


# ------------------------------------------------------------------------------------------------
# adaptive graph convolution: forward


@triton.autotune(
    configs=_configs([({"BC": 32}, 4, 2), ({"BC": 32}, 8, 2), ({"BC": 64}, 8, 2)], {"BC": 16}),
    key=["Cin", "Ce", "T", "V"])
@triton.jit
def agc_attention_fwd(x, tw, tb, pw, pb, A, Bm, attn, M, Cin, Ce, T, V, scale,
                      HAS_TB: tl.constexpr, HAS_PB: tl.constexpr, HAS_B: tl.constexpr,
                      BJ: tl.constexpr, BE: tl.constexpr, BV: tl.constexpr, BC: tl.constexpr,
                      ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (N, K). Streams the whole window of sample n: theta_k, phi_k per tile, S accumulated
    as block-diagonal D = sum theta^T phi, folded, softmax over v; writes attn[n, k] = C (input
    dtype) and M[n, k] = A[k] + B[k] + C (ACC dtype)."""
    DT = x.dtype.element_ty
    n = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1).to(tl.int64)
    K = tl.num_programs(1)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    x_n = x + n * Cin * TV
    offs_j = tl.arange(0, BJ)
    D = tl.zeros((BJ, BJ), ACC)
    for e0 in range(0, Ce, BE):
        e = e0 + tl.arange(0, BE).to(tl.int64)
        e_ok = e < Ce
        for p0 in range(0, TV, LJ):
            p = p0 + offs_j.to(tl.int64)
            j_ok = (offs_j < LJ) & (p < TV)
            th, ph = _embed(x_n, tw + k * Ce * Cin, tb + k * Ce, pw + k * Ce * Cin, pb + k * Ce,
                            e, e_ok, Cin, TV, p, j_ok, HAS_TB, HAS_PB, BE, BC, BJ, ACC, PREC)
            D = tl.dot(tl.trans(th.to(DT)), ph.to(DT), D, input_precision=PREC, out_dtype=ACC)
    s = _fold(D, V, LJ, offs_j, BV) * scale
    offs_v = tl.arange(0, BV)
    v_ok = offs_v < V
    s = tl.where(v_ok[:, None], s, float("-inf"))
    s_max = tl.max(s, axis=0)
    ex = tl.where(v_ok[:, None], tl.exp(s - s_max[None, :]), 0.0)
    c = ex / tl.sum(ex, axis=0)[None, :]
    vw = offs_v[:, None].to(tl.int64) * V + offs_v[None, :]
    ok = v_ok[:, None] & v_ok[None, :]
    tl.store(attn + (n * K + k) * V * V + vw, c.to(DT), mask=ok)
    m = tl.load(A + k * V * V + vw, mask=ok, other=0.0).to(ACC) + c
    if HAS_B:
        m += tl.load(Bm + k * V * V + vw, mask=ok, other=0.0).to(ACC)
    tl.store(M + (n * K + k) * V * V + vw, m, mask=ok)


@triton.autotune(
    configs=_configs([({"BO": 64, "BC": 32}, 4, 3), ({"BO": 64, "BC": 32}, 8, 3),
                      ({"BO": 32, "BC": 32}, 8, 3), ({"BO": 128, "BC": 32}, 8, 3)],
                     {"BO": 16, "BC": 16}),
    key=["Cin", "Cout", "T", "V"])
@triton.jit
def agc_fwd(x, W, M, bias, y, K, Cin, Cout, T, V, sMn, HAS_BIAS: tl.constexpr,
            BJ: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
            PREC: tl.constexpr):
    """Grid (N, tiles, Cout blocks). For each partition k: z = W_k x on the tile (channel mix
    first, fp32 in registers), then y += z bd(M[n, k]) (aggregation over joints per frame);
    finally y += sum_k bias[k]. Reads x once per k (cache hits), writes y once."""
    DT = x.dtype.element_ty
    n = tl.program_id(0).to(tl.int64)
    jb = tl.program_id(1).to(tl.int64)
    ob = tl.program_id(2).to(tl.int64)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    offs_j = tl.arange(0, BJ)
    p0 = jb * LJ
    p = p0 + offs_j
    j_ok = (offs_j < LJ) & (p < TV)
    nvalid = tl.minimum(TV - p0, LJ)
    o = ob * BO + tl.arange(0, BO).to(tl.int64)
    o_ok = o < Cout
    x_n = x + n * Cin * TV
    acc = tl.zeros((BO, BJ), ACC)
    for k in range(K):
        z = _mix(W + k * Cout * Cin, Cin, 1, o, o_ok, x_n, Cin, TV, p, j_ok,
                 BO, BC, BJ, ACC, PREC)
        mbd = _load_bd(M + n * sMn + k * V * V, V, 1, V, nvalid, offs_j)
        acc = tl.dot(z.to(DT), mbd.to(DT), acc, input_precision=PREC, out_dtype=ACC)
    if HAS_BIAS:
        bsum = tl.zeros((BO,), ACC)
        for k in range(K):
            bsum += tl.load(bias + k * Cout + o, mask=o_ok, other=0.0).to(ACC)
        acc += bsum[:, None]
    tl.store(y + n * Cout * TV + o[:, None] * TV + p[None, :], acc.to(DT),
             mask=o_ok[:, None] & j_ok[None, :])


# ------------------------------------------------------------------------------------------------
# adaptive graph convolution: backward


@triton.autotune(
    configs=_configs([({"BO": 32, "BC": 32}, 4, 2), ({"BO": 32, "BC": 32}, 8, 2),
                      ({"BO": 64, "BC": 64}, 8, 2)], {"BO": 16, "BC": 16}),
    key=["Cin", "Cout", "T", "V"])
@triton.jit
def agc_bwd_graph(g, x, W, attn, gM, gS, Cin, Cout, T, V,
                  STORE_GM: tl.constexpr, HAS_ATT: tl.constexpr, BJ: tl.constexpr,
                  BV: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
                  PREC: tl.constexpr):
    """Grid (N, K). gM[n, k][v, w] = sum_{c, t} x[c, t, v] h[c, t, w] with h = W_k^T grad_y,
    streamed over the window; with attention also the softmax backward
    gS[n, k] = C * (gM - sum_v C * gM) (without the 1 / (Ce T) factor, applied later in fp32)."""
    DT = x.dtype.element_ty
    n = tl.program_id(0).to(tl.int64)
    k = tl.program_id(1).to(tl.int64)
    K = tl.num_programs(1)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    offs_j = tl.arange(0, BJ)
    x_n = x + n * Cin * TV
    g_n = g + n * Cout * TV
    w_k = W + k * Cout * Cin
    D = tl.zeros((BJ, BJ), ACC)
    for p0 in range(0, TV, LJ):
        p = p0 + offs_j.to(tl.int64)
        j_ok = (offs_j < LJ) & (p < TV)
        for c0 in range(0, Cin, BC):
            c = c0 + tl.arange(0, BC).to(tl.int64)
            c_ok = c < Cin
            h = _mix(w_k, 1, Cin, c, c_ok, g_n, Cout, TV, p, j_ok, BC, BO, BJ, ACC, PREC)
            xT = tl.load(x_n + c[None, :] * TV + p[:, None], mask=c_ok[None, :] & j_ok[:, None],
                         other=0.0)
            D = tl.dot(xT, h.to(DT), D, input_precision=PREC, out_dtype=ACC)
    gm = _fold(D, V, LJ, offs_j, BV)
    offs_v = tl.arange(0, BV)
    v_ok = offs_v < V
    vw = offs_v[:, None].to(tl.int64) * V + offs_v[None, :]
    ok = v_ok[:, None] & v_ok[None, :]
    base = (n * K + k) * V * V
    if STORE_GM:
        tl.store(gM + base + vw, gm, mask=ok)
    if HAS_ATT:
        cm = tl.load(attn + base + vw, mask=ok, other=0.0).to(ACC)
        gs = cm * (gm - tl.sum(cm * gm, axis=0)[None, :])
        tl.store(gS + base + vw, gs, mask=ok)


@triton.autotune(
    configs=_configs([({"BC": 32, "BO": 32}, 8, 2), ({"BC": 64, "BO": 32}, 8, 2),
                      ({"BC": 128, "BO": 32}, 8, 2)], {"BC": 16, "BO": 16}),
    key=["Cin", "Cout", "Ce", "T", "V"])
@triton.jit
def agc_bwd_x(g, x, W, M, tw, tb, pw, pb, gS, gx, K, Cin, Cout, Ce, T, V, sMn, scale,
              HAS_ATT: tl.constexpr, HAS_TB: tl.constexpr, HAS_PB: tl.constexpr,
              BJ: tl.constexpr, BE: tl.constexpr, BC: tl.constexpr, BO: tl.constexpr,
              ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (N, tiles, Cin blocks). gx = sum_k (W_k^T grad_y) bd(M[n, k]^T)
    + scale * sum_k (theta_w[k]^T (phi bd(gS^T)) + phi_w[k]^T (theta bd(gS))), with theta/phi
    recomputed on the tile. Writes gx once."""
    DT = x.dtype.element_ty
    n = tl.program_id(0).to(tl.int64)
    jb = tl.program_id(1).to(tl.int64)
    cb = tl.program_id(2).to(tl.int64)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    offs_j = tl.arange(0, BJ)
    p0 = jb * LJ
    p = p0 + offs_j
    j_ok = (offs_j < LJ) & (p < TV)
    nvalid = tl.minimum(TV - p0, LJ)
    c = cb * BC + tl.arange(0, BC).to(tl.int64)
    c_ok = c < Cin
    x_n = x + n * Cin * TV
    g_n = g + n * Cout * TV
    acc = tl.zeros((BC, BJ), ACC)
    acc_att = tl.zeros((BC, BJ), ACC)
    for k in range(K):
        h = _mix(W + k * Cout * Cin, 1, Cin, c, c_ok, g_n, Cout, TV, p, j_ok,
                 BC, BO, BJ, ACC, PREC)
        mbdT = _load_bd(M + n * sMn + k * V * V, 1, V, V, nvalid, offs_j)
        acc = tl.dot(h.to(DT), mbdT.to(DT), acc, input_precision=PREC, out_dtype=ACC)
        if HAS_ATT:
            gs_nk = gS + (n * K + k) * V * V
            gsT = _load_bd(gs_nk, 1, V, V, nvalid, offs_j).to(DT)  # gtheta = phi bd(gS^T)
            gsN = _load_bd(gs_nk, V, 1, V, nvalid, offs_j).to(DT)  # gphi = theta bd(gS)
            for e0 in range(0, Ce, BE):
                e = e0 + tl.arange(0, BE).to(tl.int64)
                e_ok = e < Ce
                th, ph = _embed(x_n, tw + k * Ce * Cin, tb + k * Ce, pw + k * Ce * Cin,
                                pb + k * Ce, e, e_ok, Cin, TV, p, j_ok, HAS_TB, HAS_PB,
                                BE, BO, BJ, ACC, PREC)
                gth = tl.dot(ph.to(DT), gsT, input_precision=PREC, out_dtype=ACC)
                gph = tl.dot(th.to(DT), gsN, input_precision=PREC, out_dtype=ACC)
                wm = c_ok[:, None] & e_ok[None, :]
                twT = tl.load(tw + k * Ce * Cin + e[None, :] * Cin + c[:, None], mask=wm,
                              other=0.0)
                pwT = tl.load(pw + k * Ce * Cin + e[None, :] * Cin + c[:, None], mask=wm,
                              other=0.0)
                acc_att = tl.dot(twT, gth.to(DT), acc_att, input_precision=PREC, out_dtype=ACC)
                acc_att = tl.dot(pwT, gph.to(DT), acc_att, input_precision=PREC, out_dtype=ACC)
    if HAS_ATT:
        acc += acc_att * scale
    tl.store(gx + n * Cin * TV + c[:, None] * TV + p[None, :], acc.to(DT),
             mask=c_ok[:, None] & j_ok[None, :])


@triton.autotune(
    configs=_configs([({"BO": 32, "BC": 32}, 8, 2), ({"BO": 64, "BC": 32}, 8, 2),
                      ({"BO": 64, "BC": 64}, 8, 2)], {"BO": 16, "BC": 16}),
    key=["Cin", "Cout", "T", "V"])
@triton.jit
def agc_bwd_w(g, x, M, gWp, gbp, N, Cin, Cout, T, V, sMn, NPER, HAS_BIAS: tl.constexpr,
              BJ: tl.constexpr, BO: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr,
              PREC: tl.constexpr):
    """Grid (Cout blocks * Cin blocks, K, splits of N). Partial
    gW[s, k, o, c] = sum over the split's samples and the window of grad_y[o, p] (x bd(M))[c, p];
    the (k = 0, first Cin block) programs also write the partial bias gradient sum grad_y."""
    DT = x.dtype.element_ty
    pid = tl.program_id(0)
    n_cb = tl.cdiv(Cin, BC)
    ob = (pid // n_cb).to(tl.int64)
    cb = (pid % n_cb).to(tl.int64)
    k = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2).to(tl.int64)
    K = tl.num_programs(1)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    offs_j = tl.arange(0, BJ)
    o = ob * BO + tl.arange(0, BO).to(tl.int64)
    o_ok = o < Cout
    c = cb * BC + tl.arange(0, BC).to(tl.int64)
    c_ok = c < Cin
    accw = tl.zeros((BO, BC), ACC)
    accb = tl.zeros((BO,), ACC)
    n0 = s * NPER
    n1 = tl.minimum(n0 + NPER, N)
    for n in range(n0, n1):
        mbdT = _load_bd(M + n * sMn + k * V * V, 1, V, V, LJ, offs_j).to(DT)
        x_n = x + n * Cin * TV
        g_n = g + n * Cout * TV
        for p0 in range(0, TV, LJ):
            p = p0 + offs_j.to(tl.int64)
            j_ok = (offs_j < LJ) & (p < TV)
            xT = tl.load(x_n + c[None, :] * TV + p[:, None], mask=c_ok[None, :] & j_ok[:, None],
                         other=0.0)
            aT = tl.dot(mbdT, xT, input_precision=PREC, out_dtype=ACC)  # (x bd(M))^T
            gt = tl.load(g_n + o[:, None] * TV + p[None, :], mask=o_ok[:, None] & j_ok[None, :],
                         other=0.0)
            accw = tl.dot(gt, aT.to(DT), accw, input_precision=PREC, out_dtype=ACC)
            if HAS_BIAS:
                accb += tl.sum(gt.to(ACC), axis=1)
    tl.store(gWp + ((s * K + k) * Cout + o[:, None]) * Cin + c[None, :], accw,
             mask=o_ok[:, None] & c_ok[None, :])
    if HAS_BIAS:
        o_lim = tl.where((k == 0) & (cb == 0), Cout, 0)  # one program column writes the bias sums
        tl.store(gbp + s * Cout + o, accb, mask=o < o_lim)


@triton.autotune(
    configs=_configs([({"BC": 16}, 4, 2), ({"BC": 16}, 8, 2), ({"BC": 32}, 8, 2)], {"BC": 16}),
    key=["Cin", "Ce", "T", "V"])
@triton.jit
def agc_bwd_attw(x, tw, tb, pw, pb, gS, gtwp, gpwp, gtbp, gpbp, N, Cin, Ce, T, V, NPER, scale,
                 HAS_TB: tl.constexpr, HAS_PB: tl.constexpr, STORE_TB: tl.constexpr,
                 STORE_PB: tl.constexpr, BJ: tl.constexpr, BE: tl.constexpr, BC: tl.constexpr,
                 ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (Ce blocks * Cin blocks, K, splits of N). Recomputes theta/phi per tile and writes the
    partial embedding-weight gradients gtheta_w[s, k, e, c] = scale * sum gtheta[e, p] x[c, p]
    (gtheta = phi bd(gS^T)), likewise phi_w (gphi = theta bd(gS)), and the bias sums (from the
    first Cin block)."""
    DT = x.dtype.element_ty
    pid = tl.program_id(0)
    n_cb = tl.cdiv(Cin, BC)
    eb = (pid // n_cb).to(tl.int64)
    cb = (pid % n_cb).to(tl.int64)
    k = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2).to(tl.int64)
    K = tl.num_programs(1)
    TV = T * V
    FT = BJ // V
    LJ = FT * V
    offs_j = tl.arange(0, BJ)
    e = eb * BE + tl.arange(0, BE).to(tl.int64)
    e_ok = e < Ce
    c = cb * BC + tl.arange(0, BC).to(tl.int64)
    c_ok = c < Cin
    acc_tw = tl.zeros((BE, BC), ACC)
    acc_pw = tl.zeros((BE, BC), ACC)
    acc_tb = tl.zeros((BE,), ACC)
    acc_pb = tl.zeros((BE,), ACC)
    n0 = s * NPER
    n1 = tl.minimum(n0 + NPER, N)
    for n in range(n0, n1):
        gs_nk = gS + (n * K + k) * V * V
        gsT = _load_bd(gs_nk, 1, V, V, LJ, offs_j).to(DT)
        gsN = _load_bd(gs_nk, V, 1, V, LJ, offs_j).to(DT)
        x_n = x + n * Cin * TV
        for p0 in range(0, TV, LJ):
            p = p0 + offs_j.to(tl.int64)
            j_ok = (offs_j < LJ) & (p < TV)
            th, ph = _embed(x_n, tw + k * Ce * Cin, tb + k * Ce, pw + k * Ce * Cin, pb + k * Ce,
                            e, e_ok, Cin, TV, p, j_ok, HAS_TB, HAS_PB, BE, BC, BJ, ACC, PREC)
            gth = tl.dot(ph.to(DT), gsT, input_precision=PREC, out_dtype=ACC)
            gph = tl.dot(th.to(DT), gsN, input_precision=PREC, out_dtype=ACC)
            xT = tl.load(x_n + c[None, :] * TV + p[:, None], mask=c_ok[None, :] & j_ok[:, None],
                         other=0.0)
            acc_tw = tl.dot(gth.to(DT), xT, acc_tw, input_precision=PREC, out_dtype=ACC)
            acc_pw = tl.dot(gph.to(DT), xT, acc_pw, input_precision=PREC, out_dtype=ACC)
            if STORE_TB:
                acc_tb += tl.sum(gth, axis=1)
            if STORE_PB:
                acc_pb += tl.sum(gph, axis=1)
    wofs = ((s * K + k) * Ce + e[:, None]) * Cin + c[None, :]
    wm = e_ok[:, None] & c_ok[None, :]
    tl.store(gtwp + wofs, acc_tw * scale, mask=wm)
    tl.store(gpwp + wofs, acc_pw * scale, mask=wm)
    bofs = (s * K + k) * Ce + e
    e_lim = tl.where(cb == 0, Ce, 0)  # the first Cin block writes the bias sums
    if STORE_TB:
        tl.store(gtbp + bofs, acc_tb * scale, mask=e < e_lim)
    if STORE_PB:
        tl.store(gpbp + bofs, acc_pb * scale, mask=e < e_lim)


# ------------------------------------------------------------------------------------------------
# per-joint linear


@triton.autotune(
    configs=_configs([({"BM": 64, "BC": 32}, 4, 3), ({"BM": 128, "BC": 32}, 4, 3),
                      ({"BM": 128, "BC": 64}, 8, 3)], {"BM": 16, "BC": 16}),
    key=["V", "C", "D"])
@triton.jit
def jl_fwd(x, W, b, y, M, V, C, D, HAS_B: tl.constexpr, BD: tl.constexpr, BM: tl.constexpr,
           BC: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (M blocks, V, D blocks): y[m, v, d] = sum_c x[m, v, c] W[v, c, d] + b[v, d]; D = 3 is
    padded to BD >= 16 in registers (masked)."""
    DT = x.dtype.element_ty
    mb = tl.program_id(0).to(tl.int64)
    v = tl.program_id(1).to(tl.int64)
    db = tl.program_id(2).to(tl.int64)
    m = mb * BM + tl.arange(0, BM).to(tl.int64)
    m_ok = m < M
    d = db * BD + tl.arange(0, BD).to(tl.int64)
    d_ok = d < D
    acc = tl.zeros((BM, BD), ACC)
    for c0 in range(0, C, BC):
        c = c0 + tl.arange(0, BC).to(tl.int64)
        c_ok = c < C
        xt = tl.load(x + (m[:, None] * V + v) * C + c[None, :], mask=m_ok[:, None] & c_ok[None, :],
                     other=0.0)
        wt = tl.load(W + (v * C + c[:, None]) * D + d[None, :], mask=c_ok[:, None] & d_ok[None, :],
                     other=0.0)
        acc = tl.dot(xt, wt, acc, input_precision=PREC, out_dtype=ACC)
    if HAS_B:
        acc += tl.load(b + v * D + d, mask=d_ok, other=0.0).to(ACC)[None, :]
    tl.store(y + (m[:, None] * V + v) * D + d[None, :], acc.to(DT),
             mask=m_ok[:, None] & d_ok[None, :])


@triton.autotune(
    configs=_configs([({"BM": 64, "BC": 32}, 4, 3), ({"BM": 128, "BC": 64}, 8, 3)],
                     {"BM": 16, "BC": 16}),
    key=["V", "C", "D"])
@triton.jit
def jl_bwd_x(gy, W, gx, M, V, C, D, BD: tl.constexpr, BM: tl.constexpr, BC: tl.constexpr,
             ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (M blocks, V, C blocks): gx[m, v, c] = sum_d gy[m, v, d] W[v, c, d]."""
    DT = gy.dtype.element_ty
    mb = tl.program_id(0).to(tl.int64)
    v = tl.program_id(1).to(tl.int64)
    cb = tl.program_id(2).to(tl.int64)
    m = mb * BM + tl.arange(0, BM).to(tl.int64)
    m_ok = m < M
    c = cb * BC + tl.arange(0, BC).to(tl.int64)
    c_ok = c < C
    acc = tl.zeros((BM, BC), ACC)
    for d0 in range(0, D, BD):
        d = d0 + tl.arange(0, BD).to(tl.int64)
        d_ok = d < D
        gt = tl.load(gy + (m[:, None] * V + v) * D + d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                     other=0.0)
        wT = tl.load(W + (v * C + c[None, :]) * D + d[:, None], mask=d_ok[:, None] & c_ok[None, :],
                     other=0.0)
        acc = tl.dot(gt, wT, acc, input_precision=PREC, out_dtype=ACC)
    tl.store(gx + (m[:, None] * V + v) * C + c[None, :], acc.to(DT),
             mask=m_ok[:, None] & c_ok[None, :])


@triton.autotune(
    configs=_configs([({"BM": 64, "BC": 32}, 4, 3), ({"BM": 128, "BC": 64}, 8, 3)],
                     {"BM": 16, "BC": 16}),
    key=["V", "C", "D"])
@triton.jit
def jl_bwd_w(gy, x, gWp, gbp, M, V, C, D, MPER, HAS_B: tl.constexpr, BD: tl.constexpr,
             BM: tl.constexpr, BC: tl.constexpr, ACC: tl.constexpr, PREC: tl.constexpr):
    """Grid (C blocks * D blocks, V, splits of M): partial gW[s, v, c, d] = sum_m x[m, v, c]
    gy[m, v, d] over the split's rows, and (first C block) the partial bias gradient."""
    DT = gy.dtype.element_ty
    pid = tl.program_id(0)
    n_db = tl.cdiv(D, BD)
    cb = (pid // n_db).to(tl.int64)
    db = (pid % n_db).to(tl.int64)
    v = tl.program_id(1).to(tl.int64)
    s = tl.program_id(2).to(tl.int64)
    c = cb * BC + tl.arange(0, BC).to(tl.int64)
    c_ok = c < C
    d = db * BD + tl.arange(0, BD).to(tl.int64)
    d_ok = d < D
    acc = tl.zeros((BC, BD), ACC)
    accb = tl.zeros((BD,), ACC)
    m0 = s * MPER
    m1 = tl.minimum(m0 + MPER, M)
    for ms in range(m0, m1, BM):
        m = ms + tl.arange(0, BM).to(tl.int64)
        m_ok = m < m1
        xT = tl.load(x + (m[None, :] * V + v) * C + c[:, None], mask=c_ok[:, None] & m_ok[None, :],
                     other=0.0)
        gt = tl.load(gy + (m[:, None] * V + v) * D + d[None, :], mask=m_ok[:, None] & d_ok[None, :],
                     other=0.0)
        acc = tl.dot(xT, gt, acc, input_precision=PREC, out_dtype=ACC)
        if HAS_B:
            accb += tl.sum(gt.to(ACC), axis=0)
    tl.store(gWp + ((s * V + v) * C + c[:, None]) * D + d[None, :], acc,
             mask=c_ok[:, None] & d_ok[None, :])
    if HAS_B:
        d_lim = tl.where(cb == 0, D, 0)  # the first C block writes the bias sums
        tl.store(gbp + (s * V + v) * D + d, accb, mask=d < d_lim)


# ------------------------------------------------------------------------------------------------
# training epilogues: counter-based dropout and BatchNorm + dropout + residual + ReLU
#
# The dropout mask is the cpu backend's (csrc/cpu/bn_act.cpp), element for element: element
# i = 64 b + 16 w + j of the contiguous tensor is kept when word w of Philox4x32-10(key = seed,
# counter = 16 b + j) is below the keep threshold. tl.randint4x(seed, counter) is that Philox
# (counter words (lo, hi, 0, 0), key words (seed lo, seed hi)), so the same seed gives the same
# mask on every backend. Each element computes its own counter's four words and keeps one: four
# times the minimal arithmetic, which these memory-bound kernels can afford.


@triton.jit
def _keep(seed, offs, thr):
    """True where element ``offs`` (int64 flat indices) survives; ``thr`` the keep threshold."""
    ctr = (offs // 64) * 16 + offs % 16
    w = (offs // 16) % 4
    r0, r1, r2, r3 = tl.randint4x(seed, ctr)
    word = tl.where(w == 0, r0, tl.where(w == 1, r1, tl.where(w == 2, r2, r3)))
    return word.to(tl.int64) < thr.to(tl.int64)


@triton.jit
def dropout_fwd(x, y, scale, numel, seed, thr, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (numel blocks,): y = x * scale where kept, else 0 (``scale`` a one-element tensor)."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    ok = offs < numel
    v = tl.load(x + offs, mask=ok, other=0.0).to(ACC)
    s = tl.load(scale).to(ACC)
    out = tl.where(_keep(seed, offs, thr), v * s, 0.0)
    tl.store(y + offs, out.to(y.dtype.element_ty), mask=ok)


@triton.jit
def bn_stats(z, cnt_p, mean_p, m2_p, C, L, M, PER, ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (C, splits): count, mean and sum of squared deviations of the ``PER`` positions of
    channel c that split s covers (position r = n L + l of the channel's M = N L is element
    (n C + c) L + l), merged block by block (Chan et al.), stored at ``[c, s]``."""
    c = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    start = s * PER
    stop = tl.minimum(start + PER, M)
    cnt = tl.zeros((BLOCK,), ACC).sum(axis=0)
    mean = cnt
    m2 = cnt
    for r0 in range(0, PER, BLOCK):
        r = start + r0 + tl.arange(0, BLOCK).to(tl.int64)
        ok = r < stop
        v = tl.load(z + ((r // L) * C + c) * L + r % L, mask=ok, other=0.0).to(ACC)
        bc = tl.sum(ok.to(ACC), axis=0)
        bmean = tl.sum(v, axis=0) / tl.maximum(bc, 1.0)
        dv = tl.where(ok, v - bmean, 0.0)
        tot = cnt + bc
        frac = bc / tl.maximum(tot, 1.0)
        delta = bmean - mean
        m2 = m2 + tl.sum(dv * dv, axis=0) + delta * delta * cnt * frac
        mean = mean + delta * frac
        cnt = tot
    nsplit = tl.num_programs(1)
    tl.store(cnt_p + c * nsplit + s, cnt)
    tl.store(mean_p + c * nsplit + s, mean)
    tl.store(m2_p + c * nsplit + s, m2)


@triton.jit
def bn_act_fwd(z, res, mul, off, scale, y, numel, C, L, seed, thr, HAS_P: tl.constexpr,
               HAS_RES: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr,
               BLOCK: tl.constexpr):
    """Grid (numel blocks,): y = act(dropout(z * mul[c] + off[c]) + res), c = (i // L) % C."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    ok = offs < numel
    c = (offs // L) % C
    v = tl.load(z + offs, mask=ok, other=0.0).to(ACC)
    v = v * tl.load(mul + c, mask=ok, other=0.0) + tl.load(off + c, mask=ok, other=0.0)
    if HAS_P:
        v = tl.where(_keep(seed, offs, thr), v * tl.load(scale).to(ACC), 0.0)
    if HAS_RES:
        v += tl.load(res + offs, mask=ok, other=0.0).to(ACC)
    if RELU:
        v = tl.maximum(v, 0.0)
    tl.store(y + offs, v.to(y.dtype.element_ty), mask=ok)


@triton.jit
def _bn_act_d(gy, y, offs, ok, scale, seed, thr, HAS_P: tl.constexpr, RELU: tl.constexpr,
              ACC: tl.constexpr):
    """(d, g): g = grad * relu'(y) (the residual's gradient), d = dropout(g) (the BatchNorm
    output's gradient)."""
    g = tl.load(gy + offs, mask=ok, other=0.0).to(ACC)
    if RELU:
        g = tl.where(tl.load(y + offs, mask=ok, other=0.0) > 0, g, 0.0)
    d = g
    if HAS_P:
        d = tl.where(_keep(seed, offs, thr), g * tl.load(scale).to(ACC), 0.0)
    return d, g


@triton.jit
def bn_act_bwd_sums(gy, y, z, mean, scale, gres, sd_p, sdz_p, C, L, M, PER, seed, thr,
                    HAS_P: tl.constexpr, RELU: tl.constexpr, STORE_RES: tl.constexpr,
                    ACC: tl.constexpr, BLOCK: tl.constexpr):
    """Grid (C, splits): partial sums of d and of d (z - mean[c]) over split s of channel c
    (stored at ``[c, s]``), and the residual's gradient g where ``STORE_RES``."""
    c = tl.program_id(0).to(tl.int64)
    s = tl.program_id(1).to(tl.int64)
    start = s * PER
    stop = tl.minimum(start + PER, M)
    mu = tl.load(mean + c).to(ACC)
    acc_d = tl.zeros((BLOCK,), ACC)
    acc_dz = tl.zeros((BLOCK,), ACC)
    for r0 in range(0, PER, BLOCK):
        r = start + r0 + tl.arange(0, BLOCK).to(tl.int64)
        ok = r < stop
        offs = ((r // L) * C + c) * L + r % L
        d, g = _bn_act_d(gy, y, offs, ok, scale, seed, thr, HAS_P, RELU, ACC)
        if STORE_RES:
            tl.store(gres + offs, g.to(gres.dtype.element_ty), mask=ok)
        zc = tl.load(z + offs, mask=ok, other=0.0).to(ACC) - mu
        acc_d += d
        acc_dz += tl.where(ok, d * zc, 0.0)
    nsplit = tl.num_programs(1)
    tl.store(sd_p + c * nsplit + s, tl.sum(acc_d, axis=0))
    tl.store(sdz_p + c * nsplit + s, tl.sum(acc_dz, axis=0))


@triton.jit
def bn_act_bwd_z(gy, y, z, mean, k, md, kz, scale, gz, numel, C, L, seed, thr,
                 HAS_P: tl.constexpr, RELU: tl.constexpr, ACC: tl.constexpr,
                 BLOCK: tl.constexpr):
    """Grid (numel blocks,): grad_z = k[c] (d - md[c] - (z - mean[c]) kz[c])."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    ok = offs < numel
    c = (offs // L) % C
    d, g = _bn_act_d(gy, y, offs, ok, scale, seed, thr, HAS_P, RELU, ACC)
    zc = tl.load(z + offs, mask=ok, other=0.0).to(ACC) - tl.load(mean + c, mask=ok,
                                                                   other=0.0).to(ACC)
    out = tl.load(k + c, mask=ok, other=0.0) * (d - tl.load(md + c, mask=ok, other=0.0)
                                                - zc * tl.load(kz + c, mask=ok, other=0.0))
    tl.store(gz + offs, out.to(gz.dtype.element_ty), mask=ok)

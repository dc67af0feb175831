"""StreamingLifter: live 2D -> 3D lifting of one or many streams, frame by frame.

State and layout
----------------
* ``ring`` (S, R + 1, V, 2) on the device, preallocated: each stream's last R frames (R = T, or
  the span of the window in input frames when ``fps`` differs from the model's rate), frame f of
  a stream in slot ``f % R`` (slot R is a scratch slot that the CUDA-graph step writes for
  streams that were not pushed). Frames are written in place (``index_copy_``).
* ``window`` (S, T, V, 2) on the device, preallocated: the window(s) to lift, assembled by one
  ``index_select`` from the ring with indices computed from the streams' frame counts. Frame
  indices are clamped at 0, which *is* the left replicate padding of :func:`lift_sequence`
  (before frame T - 1 the window repeats the stream's first frame) without ever filling the
  buffer; flushing clamps them at the last frame, which is the right padding.
* Per stream: ``count`` (frames pushed since the last reset) mirrored on the host, so deciding
  what is ready never waits for the device; ``last_valid`` (V, 2) and ``seen`` (V,) for missing
  data.

Frame rate
----------
A model learns the speed of motion at the rate it was trained at (50 Hz for the shipped
lifters). With ``fps`` (the camera's rate) the window samples the stream at the model's frame
spacing, interpolating between the frames pushed (:func:`posekernels.inference.window_sampling`,
the formula :func:`posekernels.lift_sequence` applies with the same ``fps``): a 30 fps stream
and a 50 Hz centred T = 27 model read 8 frames back and 8 ahead (8 frames = 267 ms of delay,
``latency_frames``) instead of 13 and 13. One pose still comes out per frame pushed.

Emission
--------
Centred mode (window [t - h, t + h], h = (T - 1) / 2, or h = ``latency_frames``
with ``fps``): pushing the stream's frame c emits the pose of frame c - h, so the first pose
comes with the (h + 1)-th frame and ``flush()`` returns the last min(h, count) poses, computed
with the last frame replicated. Causal mode (window
[t - T + 1, t]): pushing frame c emits the pose of frame c at once; flush returns nothing. The
concatenation of everything a stream emitted equals :func:`posekernels.lift_sequence` on the
same frames (after missing-data filling) to float rounding.

Many streams
------------
All streams live in one batch. ``push(frames)`` with (S, V, 2) advances every stream;
``push(frames, streams=[...])`` advances only the listed ones. Streams can start (and be
``reset``) at different times: each has its own count, so its own fill state. On the CPU and in
eager mode only the windows of streams that emit a pose are lifted (in chunks of at most
``max_batch`` windows). On a CUDA device (``cuda_graph=True``, the default there) the whole step
-- missing-data filling, the ring write, the window gather and the forward of all S windows -- is
captured once in a CUDA graph and replayed for every push: inputs are staged in pinned host
buffers and copied with ``non_blocking=True``; outputs of streams that are not ready (still
filling, or not pushed) are computed and discarded.

Missing data
------------
A joint given as NaN/inf, beyond ``MAX_COORDINATE`` (1000) in either coordinate (no
detection in normalised screen coordinates is that far off the image; the lifter warns once,
since pixel coordinates passed by mistake look like this), or with a score below
``min_score``, takes that joint's last valid value in the stream. A joint never valid since
the stream started takes the mean of the frame's valid joints (or 0, the image centre, when
the frame has none). A frame with nothing valid thus repeats the previous frame. None of this
raises: bad *values* never raise in ``push``; bad *shapes* or out-of-range stream indices raise
ValueError, and stream indices that are not ints (``1.7``, ``"12"``, ``True``) raise
TypeError, before any state changes.

Threads
-------
One lifter may be shared by several threads (typically one per stream): ``push``, ``flush``,
``reset`` and ``counts`` hold the lifter's lock, so concurrent calls run one after the other and
each gets exactly the poses it would get alone. ``last_frame_index`` and ``last_ready`` are kept
per thread: each thread reads those of its own last ``push``. Calls of different threads are not
parallel; for parallel lifting, use one lifter per thread (or push many streams in one call).
"""
from __future__ import annotations

import math
import threading
import warnings
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..inference import build_plan, model_joints, model_rate, window_sampling
from ..inference.lift import MAX_COORDINATE, pose_rate
from ..inference.smoothing import OneEuroFilter, smoothing_config

__all__ = ["StreamingLifter", "fill_missing", "DEFAULT_MIN_SCORE", "MAX_STREAMS",
           "MAX_COORDINATE"]

DEFAULT_MIN_SCORE = 0.3
MAX_STREAMS = 1 << 16  # the most streams one lifter holds (its ring and window are preallocated)
_MODES = {"centered": False, "centred": False, "causal": True}


def fill_missing(keypoints, scores=None, *, min_score: float = DEFAULT_MIN_SCORE,
                 max_coordinate: float = MAX_COORDINATE):
    """Offline version of the lifter's missing-data rule on a whole sequence (F, V, 2), or on a
    batch of sequences (N, F, V, 2) filled independently (vectorised over the batch).

    Returns a filled copy (numpy in, numpy out; a tensor keeps its dtype and device): what a
    :class:`StreamingLifter` writes into its window for the same frames and scores (F, V) or
    (N, F, V). Use it to compare a live stream with :func:`posekernels.lift_sequence`; the
    camera-randomised training applies it to its augmented windows (in pixels, with
    ``max_coordinate=math.inf``: there only NaN marks a missing joint). A joint is missing when
    NaN/inf, beyond ``max_coordinate`` in either coordinate, or scored below ``min_score``.
    """
    as_numpy = not isinstance(keypoints, Tensor)
    kp = torch.as_tensor(np.asarray(keypoints) if as_numpy else keypoints).double()
    if kp.dim() not in (3, 4) or kp.shape[-1] != 2:
        raise ValueError(f"keypoints must have shape (F, V, 2) or (N, F, V, 2), got "
                         f"{tuple(kp.shape)}")
    sc = None if scores is None else torch.as_tensor(np.asarray(scores) if as_numpy else scores)
    if sc is not None and tuple(sc.shape) != tuple(kp.shape[:-1]):
        raise ValueError(f"scores must have shape {tuple(kp.shape[:-1])}, got "
                         f"{tuple(sc.shape)}")
    single = kp.dim() == 3
    if single:
        kp = kp[None]
        sc = None if sc is None else sc[None]
    sc = None if sc is None else sc.to(device=kp.device, dtype=torch.float64)
    n, nf, v, _ = kp.shape
    out = torch.empty_like(kp)
    last = torch.zeros(n, v, 2, dtype=kp.dtype, device=kp.device)
    seen = torch.zeros(n, v, dtype=torch.bool, device=kp.device)
    for f in range(nf):
        s_f = None if sc is None else sc[:, f]
        out[:, f] = _fill_step(kp[:, f], s_f, last, seen, min_score, max_coordinate)
        last = out[:, f]
        seen = seen | _valid(kp[:, f], s_f, min_score, max_coordinate)
    if single:
        out = out[0]
    return out.numpy().astype(np.asarray(keypoints).dtype) if as_numpy else out.to(keypoints.dtype)


def _valid(frames: Tensor, scores: Tensor | None, min_score: float,
           max_coordinate: float = MAX_COORDINATE) -> Tensor:
    ok = (frames.abs() <= max_coordinate).all(-1)  # NaN compares False: invalid (inf too
    ok &= torch.isfinite(frames).all(-1)           # when max_coordinate is inf)
    if scores is not None:
        ok &= scores >= min_score  # NaN scores compare False: invalid
    return ok


def _fill_step(frames, scores, last, seen, min_score, max_coordinate=MAX_COORDINATE):
    """frames (n, V, 2) -> filled (n, V, 2); pure function of the inputs (no state change)."""
    valid = _valid(frames, scores, min_score, max_coordinate)
    vmask = valid[..., None]
    clean = torch.where(vmask, frames, torch.zeros((), dtype=frames.dtype, device=frames.device))
    nvalid = valid.sum(-1, keepdim=True).clamp_(min=1).to(frames.dtype)  # (n, 1)
    centroid = clean.sum(-2) / nvalid  # (n, 2); 0 when nothing is valid
    fallback = torch.where(seen[..., None], last, centroid[:, None, :])
    return torch.where(vmask, frames, fallback)


class StreamingLifter:
    """Lift live 2D keypoint streams to 3D poses, one frame at a time (see the module doc).

    Parameters
    ----------
    model : a posekernels lifting model (GLAGCN, released_sagcn, a single-frame model, ...)
        with ``receptive_field``, ``causal`` and ``num_joints``/``skeleton``. It is not modified.
    num_streams : S, the number of independent streams lifted together: an int in
        [1, ``MAX_STREAMS``] (65536); the ring and window buffers are allocated for all S at once.
    mode : ``"centered"`` (or ``"centred"``) or ``"causal"``; None takes the model's own
        (``model.causal``). It must match the model: a centred model needs future frames and a
        causal model was trained on windows ending at the current frame, so a mismatch raises
        ValueError instead of silently producing poses the model was not trained for.
    device : where the ring buffer and the model run (default: the model's device). The model is
        copied there for inference; the caller's model is left as it is.
    flip_tta : average with the mirrored prediction (like ``lift_sequence(flip_tta=True)``).
    min_score : joints with a score below this are treated as missing (see the module doc); a
        finite real number (NaN would mark every joint missing and is refused).
    max_batch : most windows per forward, a positive int (default: from a ~256 MiB activation
        budget).
    cuda_graph : capture the steady-state step in a CUDA graph (default: True on CUDA).
    fold : use the folded inference plan (:func:`posekernels.inference.build_plan`); False calls
        the model's own forward.
    tune_allocator : on the CPU, call :func:`posekernels.tune_cpu_allocator` (process-wide:
        glibc keeps freed activation blocks for reuse instead of page-faulting them back in on
        every step). False leaves the allocator alone.
    fps : the streams' frame rate (frames per second, in [1, 1000]) when it differs from the
        model's: windows then sample the stream at the model's frame spacing (see "Frame rate"
        in the module doc). None (default): frames are taken as they come.
    model_fps : the rate the model was trained at; default ``model.frame_rate`` (recorded by the
        shipped lifters: 50); needed with ``fps`` for a model that does not record it.
    smoothing : One Euro filtering of each stream's poses as they are emitted (causal: no added
        delay; see :mod:`posekernels.inference.smoothing`): None (off), True (the defaults), a
        dict or a :class:`~posekernels.inference.SmoothingConfig`. Its rate is the streams'
        (``fps``, else the model's). ``lift_sequence(..., smoothing=...)`` gives the same poses.
    precision : ``"float32"`` (default) or ``"bf16"``: the folded plan's weight products with
        bfloat16 operands and float32 accumulation (a float32 GLA-GCN on the CPU; faster where
        the CPU has AVX-512 BF16, a few millimetres off at most; see
        :func:`posekernels.inference.build_plan`). ``lift_sequence(..., precision=...)`` gives the
        same poses.

    Thread safety: one lifter may be used from several threads; its methods serialise on a lock
    (see "Threads" in the module doc). ``last_frame_index`` and ``last_ready`` are per thread.

    Busy cores: on a CPU that other work keeps busy (a 2D detector on the same cores), run torch
    with one thread (``torch.set_num_threads(1)``) or start the process with
    ``OMP_WAIT_POLICY=PASSIVE``; with several threads, waiting threads spin on cores that the
    working ones need, and a push can take tens of times longer (README, "Real-time streaming").
    """

    def __init__(self, model: nn.Module, num_streams: int = 1, mode: str | None = None,
                 device: torch.device | str | None = None, *, flip_tta: bool = False,
                 min_score: float = DEFAULT_MIN_SCORE, max_batch: int | None = None,
                 cuda_graph: bool | None = None, fold: bool = True,
                 tune_allocator: bool = True, fps: float | None = None,
                 model_fps: float | None = None, smoothing=None, precision: str = "float32"):
        if isinstance(num_streams, bool) or not isinstance(num_streams, (int, np.integer)):
            raise TypeError(f"num_streams must be an int in [1, {MAX_STREAMS}], got "
                            f"{num_streams!r} ({type(num_streams).__name__})")
        if not 1 <= num_streams <= MAX_STREAMS:
            raise ValueError(f"num_streams must be an int in [1, {MAX_STREAMS}], got "
                             f"{num_streams!r}")
        if isinstance(min_score, bool) or not isinstance(min_score, (int, float, np.integer,
                                                                      np.floating)):
            raise TypeError(f"min_score must be a finite real number, got {min_score!r} "
                            f"({type(min_score).__name__})")
        if not math.isfinite(min_score):
            raise ValueError(f"min_score must be a finite real number, got {min_score!r} (NaN "
                             "would mark every joint missing)")
        if max_batch is not None:
            if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)):
                raise TypeError(f"max_batch must be a positive int or None, got {max_batch!r} "
                                f"({type(max_batch).__name__})")
            if max_batch < 1:
                raise ValueError(f"max_batch must be a positive int or None, got {max_batch!r}")
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        params = list(model.parameters())
        if not params:
            raise ValueError("model has no parameters")
        model_causal = bool(getattr(model, "causal", False))
        windowed = hasattr(model, "receptive_field")
        if mode is None:
            mode = "causal" if model_causal else "centered"
        if mode not in _MODES:
            raise ValueError(f"mode must be 'centered' or 'causal', got {mode!r}")
        causal = _MODES[mode]
        if windowed and causal != model_causal:
            kind = "causal" if model_causal else "centred"
            raise ValueError(
                f"mode={mode!r} does not match the model, which is {kind} (model.causal="
                f"{model_causal}): a centred model predicts the middle of its window and needs "
                f"(T - 1) / 2 future frames; a causal model was trained on windows that end at "
                f"the current frame. Use mode={'causal' if model_causal else 'centered'!r} or a "
                f"{'centred' if model_causal else 'causal'} model (GLAGCN(causal=...)).")
        self.mode = "causal" if causal else "centered"
        self.causal = causal
        self.device = torch.device(device) if device is not None else params[0].device
        if tune_allocator and self.device.type == "cpu":
            from .. import tune_cpu_allocator

            tune_cpu_allocator()
        self.dtype = params[0].dtype
        self.receptive_field = T = int(getattr(model, "receptive_field", 1))
        joints = model_joints(model)
        if joints is None:
            raise ValueError("model must have num_joints (or a skeleton) to size the stream")
        self.num_joints = V = joints
        self.num_streams = S = int(num_streams)
        self.flip_tta = bool(flip_tta)
        self.min_score = float(min_score)
        skeleton = getattr(model, "skeleton", None)
        if flip_tta and skeleton is None:
            raise ValueError("flip_tta needs a model with a skeleton (left/right joint lists)")
        # the inference copy of the model (the caller's model keeps its mode and device)
        import copy
        infer = copy.deepcopy(model).to(self.device).eval()
        for p in infer.parameters():
            p.requires_grad_(False)
        self.plan = build_plan(infer, fold=fold, precision=precision)
        self.precision = precision
        self.sampling = window_sampling(T, causal, fps, model_rate(model, model_fps)
                                        if fps is not None else 50.0)
        self.fps = None if fps is None else float(fps)
        self.delay = self.sampling.delay
        # the frames a live window touches (T at the model's own rate)
        self.ring_len = R = self.sampling.span
        if max_batch is None:
            channels = int(getattr(model, "channels", 64))
            per_window = channels * T * V * 4 * 6 * (2 if flip_tta else 1)
            max_batch = max(1, min(S, (256 << 20) // per_window))
        self.max_batch = int(max_batch)
        if skeleton is not None:
            self._flip_perm = torch.tensor(skeleton.flip_permutation(), device=self.device)
        # ---- device state
        dev, dt = self.device, self.dtype
        self.ring = torch.zeros(S, R + 1, V, 2, device=dev, dtype=dt)
        self._ring_flat = self.ring.view(S * (R + 1), V, 2)
        self.window = torch.zeros(S, T, V, 2, device=dev, dtype=dt)
        self._window_flat = self.window.view(S * T, V, 2)
        # the window's second gather (the frame after each sampling position) when interpolating
        self._window_hi = (torch.zeros(S, T, V, 2, device=dev, dtype=dt)
                           if self.sampling.interpolates else None)
        self._last = torch.zeros(S, V, 2, device=dev, dtype=dt)
        self._seen = torch.zeros(S, V, dtype=torch.bool, device=dev)
        self._lo = np.asarray(self.sampling.lo, dtype=np.int64)
        self._hi = np.asarray(self.sampling.hi, dtype=np.int64)
        self._d_lo = torch.from_numpy(self._lo).to(dev)
        self._d_hi = torch.from_numpy(self._hi).to(dev)
        self._stream_base = torch.arange(S, device=dev) * (R + 1)
        # ---- host state
        self._count = np.zeros(S, dtype=np.int64)
        smooth = smoothing_config(smoothing, pose_rate(model, fps, model_fps))
        self.smoothing = smooth
        self._smoother = (OneEuroFilter(smooth, S, V, device="cpu", dtype=dt)
                          if smooth is not None else None)
        self._lock = threading.RLock()
        self._warned_far = False  # coordinates beyond MAX_COORDINATE seen (warn once)
        self._local = threading.local()  # per thread: last_frame_index, last_ready, numpy
        # ---- CUDA graph
        if cuda_graph is None:
            cuda_graph = self.device.type == "cuda"
        if cuda_graph and self.device.type != "cuda":
            raise ValueError("cuda_graph=True needs a CUDA device")
        self.cuda_graph = bool(cuda_graph)
        self._graph = None
        if self.cuda_graph:
            self._setup_cuda_graph()

    # ------------------------------------------------------------------ public API
    @property
    def latency_frames(self) -> int:
        """Algorithmic delay: frames between a frame's arrival and its pose ((T - 1) / 2 centred,
        0 causal; with ``fps``, the input frames the window reads ahead)."""
        return self.delay

    @property
    def counts(self) -> np.ndarray:
        """Frames pushed per stream since its last reset (a copy)."""
        with self._lock:
            return self._count.copy()

    @property
    def last_frame_index(self) -> np.ndarray | None:
        """(n,) frame index (within its stream) of each row of this thread's last ``push``, -1
        where no pose was ready; None before the thread's first push."""
        return getattr(self._local, "last_frame_index", None)

    @last_frame_index.setter
    def last_frame_index(self, value) -> None:
        self._local.last_frame_index = value

    @property
    def last_ready(self) -> np.ndarray | None:
        """(n,) mask of the rows of this thread's last ``push`` that hold a pose."""
        return getattr(self._local, "last_ready", None)

    @last_ready.setter
    def last_ready(self, value) -> None:
        self._local.last_ready = value

    def reset(self, stream: int | Sequence[int] | None = None) -> None:
        """Start stream(s) over (all when None): the next frame pushed is a first frame."""
        with self._lock:
            self._reset(self._stream_index(stream, "stream"))

    def _reset(self, idx: np.ndarray) -> None:
        self._count[idx] = 0
        if self._smoother is not None:
            self._smoother.reset(idx)
        sel = torch.as_tensor(idx, device=self.device)
        self._seen[sel] = False
        self._last[sel] = 0
        if self._graph is not None:
            self._d_counts[sel] = 0

    @torch.inference_mode()
    def push(self, frames, scores=None, streams: int | Sequence[int] | None = None):
        """Push one frame per stream and return the poses that became ready.

        ``frames``: (V, 2) for one stream (``num_streams == 1`` or ``streams`` an int), or
        (n, V, 2) for ``streams`` (default: all S streams, n = S); numpy or torch, normalised
        screen coordinates. ``scores``: optional confidences (V,) / (n, V).

        Returns (V, 3) / (n, V, 3) (numpy for numpy input, else a tensor on the input's device;
        rows of streams without a ready pose are NaN), or None when no stream has a pose ready.
        ``last_frame_index`` (n,) then holds the frame index (within its stream) of each row,
        -1 where none, and ``last_ready`` the mask (both per thread).

        ``streams``: an int, or a sequence / integer array of distinct ints in [0, S); anything
        else (floats, strings, bools) raises TypeError, an index out of range ValueError.
        """
        single, idx, frames_t, scores_t, as_numpy, out_device = self._check_push(
            frames, scores, streams)
        with self._lock:
            return self._push(single, idx, frames_t, scores_t, as_numpy, out_device)

    def _push(self, single, idx, frames_t, scores_t, as_numpy, out_device):
        counts = self._count[idx]
        emit_frame = counts - self.delay  # the frame whose pose the window ending at `counts` gives
        ready = emit_frame >= 0
        if self._graph is not None:
            out = self._push_graph(idx, frames_t, scores_t)
        else:
            out = self._push_eager(idx, frames_t, scores_t, ready, counts)
        self._count[idx] += 1
        self.last_ready = ready
        self.last_frame_index = np.where(ready, emit_frame, -1)
        if not ready.any():
            return None
        if self._graph is not None:
            out = out.clone()
            out[torch.as_tensor(~ready)] = float("nan")
        if self._smoother is not None:
            r = torch.from_numpy(np.flatnonzero(ready))
            out[r] = self._smoother.step(out[r], idx[ready])
        result = out[0] if single else out
        if as_numpy:
            return result.cpu().numpy()
        return result.to(out_device)

    @torch.inference_mode()
    def flush(self, stream: int | Sequence[int] | None = None):
        """Return the poses still pending (centred mode) and start the stream(s) over.

        ``stream=None``: all streams; returns (k, V, 3) when ``num_streams == 1``, else
        (S, k, V, 3) when every stream has the same number k pending, else a list of S arrays
        (k_s, V, 3). An int returns (k, V, 3) for that stream; a list of ints, a list of arrays.
        k = min(``latency_frames``, frames pushed): (T - 1) / 2 in centred mode at the model's rate,
        0 in causal mode. Results are torch
        tensors on the CPU (numpy when this thread's last push took numpy input).
        """
        idx = self._stream_index(stream, "stream")
        with self._lock:
            return self._flush(stream, idx)

    def _flush(self, stream, idx: np.ndarray):
        results = []
        pending = []
        for s in idx:
            c = int(self._count[s])
            k = min(self.delay, c)
            pending.append((s, c, k))
        total = sum(k for _, _, k in pending)
        V = self.num_joints
        flat = torch.empty(total, V, 3, dtype=self.dtype)
        if total:
            rows = {"lo": [], "hi": []}
            for s, c, k in pending:
                if k == 0:
                    continue
                frames_j = np.arange(c - k, c)  # the frames still to emit
                for name, offs in (("lo", self._lo), ("hi", self._hi)):
                    window_frames = np.clip(frames_j[:, None] + offs[None, :], 0, c - 1)
                    rows[name].append(s * (self.ring_len + 1) + window_frames % self.ring_len)
            windows = self._gather_rows(np.concatenate(rows["lo"]).reshape(-1))
            if self.sampling.interpolates:
                windows = self.sampling.blend(
                    windows, self._gather_rows(np.concatenate(rows["hi"]).reshape(-1)))
            flat.copy_(self._forward(windows))
            if self._smoother is not None:  # each stream's pending poses, in frame order
                start = 0
                for s, c, k in pending:
                    for j in range(start, start + k):
                        flat[j] = self._smoother.step(flat[j:j + 1], np.array([s]))[0]
                    start += k
        start = 0
        for s, c, k in pending:
            results.append(flat[start:start + k])
            start += k
        self._reset(idx)
        as_numpy = getattr(self._local, "numpy", False)
        if as_numpy:
            results = [r.numpy() for r in results]
        if isinstance(stream, (int, np.integer)) or (stream is None and self.num_streams == 1):
            return results[0]
        if stream is None and len({r.shape[0] for r in results}) == 1:
            return np.stack(results) if as_numpy else torch.stack(results)
        return results

    # ------------------------------------------------------------------ internals
    def _stream_index(self, stream, name: str = "streams") -> np.ndarray:
        """Validate stream index argument ``name``: None (all), an int, or a sequence / integer
        array of distinct ints in [0, S). Floats, strings and bools are refused (TypeError)."""
        S = self.num_streams
        if stream is None:
            return np.arange(S)
        expected = (f"{name} must be an int or a sequence of ints (stream indices in "
                    f"[0, {S}))")
        if isinstance(stream, (bool, np.bool_)):
            raise TypeError(f"{expected}, got {stream!r} (a bool)")
        if isinstance(stream, (int, np.integer)):
            idx = np.array([int(stream)], dtype=np.int64)
        elif isinstance(stream, (Tensor, np.ndarray)):
            arr = stream.detach().cpu().numpy() if isinstance(stream, Tensor) else stream
            if arr.dtype.kind not in "iu" or arr.ndim > 1:
                raise TypeError(f"{expected}, got an array of dtype {arr.dtype} with shape "
                                f"{tuple(arr.shape)}")
            idx = arr.astype(np.int64).reshape(-1)
        elif isinstance(stream, (str, bytes)) or not hasattr(stream, "__iter__"):
            raise TypeError(f"{expected}, got {stream!r} ({type(stream).__name__})")
        else:
            items = list(stream)
            for v in items:
                if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                    raise TypeError(f"{expected}, got element {v!r} ({type(v).__name__})")
            idx = np.array([int(v) for v in items], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= S):
            raise ValueError(f"{name}: stream index out of range for num_streams={S}: "
                             f"{idx.tolist()}")
        if len(np.unique(idx)) != idx.size:
            raise ValueError(f"{name}: stream indices must be distinct, got {idx.tolist()}")
        return idx

    def _check_push(self, frames, scores, streams):
        V = self.num_joints
        if isinstance(frames, Tensor):
            as_numpy, out_device = False, frames.device
            f = frames.detach()
        elif isinstance(frames, np.ndarray) or isinstance(frames, (list, tuple)):
            as_numpy, out_device = True, None
            f = torch.from_numpy(np.asarray(frames, dtype=np.float64))
        else:
            raise TypeError(f"frames must be a numpy array or torch tensor, got "
                            f"{type(frames).__name__}")
        if not (f.is_floating_point() or f.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"frames must hold numbers, got dtype {f.dtype}")
        single_stream_arg = isinstance(streams, (int, np.integer)) and not isinstance(streams, bool)
        if streams is None and self.num_streams == 1 and f.dim() == 2:
            single, idx = True, np.zeros(1, dtype=np.int64)
        elif single_stream_arg:
            single, idx = True, self._stream_index(streams, "streams")
        else:
            single, idx = False, self._stream_index(streams, "streams")
        n = idx.size
        if n == 0:
            raise ValueError("streams is empty: push at least one stream")
        want = (V, 2) if single else (n, V, 2)
        if tuple(f.shape) != want:
            hint = (" (one frame per stream: pass (S, V, 2), or streams=...)"
                    if not single else "")
            raise ValueError(f"frames must have shape {want} for this lifter (V = {V} joints, "
                             f"S = {self.num_streams} streams), got {tuple(f.shape)}{hint}")
        f = f.reshape(n, V, 2)
        if not self._warned_far and f.device.type == "cpu":  # host input: no device sync
            far = (f.abs() > MAX_COORDINATE) & torch.isfinite(f)
            if bool(far.any()):
                self._warned_far = True
                warnings.warn(
                    f"StreamingLifter.push: coordinates beyond +-{MAX_COORDINATE:g} (up to "
                    f"{float(f[far].abs().max()):.4g}) are treated as missing joints; the lifter "
                    "expects normalised screen coordinates (x / w * 2 - [1, h / w], about "
                    "[-1, 1]): pixels? see posekernels.data.normalize_screen_coordinates "
                    "(warned once per lifter)", stacklevel=3)
        s = None
        if scores is not None:
            s = scores.detach() if isinstance(scores, Tensor) else torch.from_numpy(
                np.asarray(scores, dtype=np.float64))
            if tuple(s.shape) != want[:-1]:
                raise ValueError(f"scores must have shape {want[:-1]}, got {tuple(s.shape)}")
            s = s.reshape(n, V)
        self._local.numpy = as_numpy
        return single, idx, f, s, as_numpy, out_device

    def _gather_rows(self, flat_rows: np.ndarray) -> Tensor:
        """Ring rows (n * T,) -> windows (n, T, V, 2) (a new tensor)."""
        index = torch.from_numpy(flat_rows).to(self.device)
        return self._ring_flat.index_select(0, index).view(
            -1, self.receptive_field, self.num_joints, 2)

    def _forward(self, windows: Tensor) -> Tensor:
        """windows (n, T, V, 2) on the device -> (n, V, 3), in chunks of max_batch."""
        n = windows.shape[0]
        outs = []
        for a in range(0, n, self.max_batch):
            w = windows[a:a + self.max_batch]
            if self.flip_tta:
                m = w.shape[0]
                both = torch.cat([w, self._flip(w)])
                pred = self.plan(both)
                pred = (pred[:m] + self._flip(pred[m:])) / 2
            else:
                pred = self.plan(w)
            outs.append(pred)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def _flip(self, x: Tensor) -> Tensor:
        y = x.index_select(-2, self._flip_perm)
        y[..., 0].neg_()
        return y

    def _push_eager(self, idx, frames, scores, ready, counts):
        dev, dt = self.device, self.dtype
        T = self.receptive_field
        n = idx.size
        all_streams = n == self.num_streams
        sel = None if all_streams else torch.from_numpy(idx).to(dev)
        f = frames.to(dev, dt, non_blocking=True)
        sc = None if scores is None else scores.to(dev, dt, non_blocking=True)
        last = self._last if all_streams else self._last.index_select(0, sel)
        seen = self._seen if all_streams else self._seen.index_select(0, sel)
        filled = _fill_step(f, sc, last, seen, self.min_score)
        valid = _valid(f, sc, self.min_score)
        if all_streams:
            self._last.copy_(filled)
            self._seen.logical_or_(valid)
        else:
            self._last.index_copy_(0, sel, filled)
            self._seen.index_copy_(0, sel, seen | valid)
        R = self.ring_len
        # ring write: frame `counts` of stream s goes to slot counts % R
        slots = torch.from_numpy(idx * (R + 1) + counts % R).to(dev)
        self._ring_flat.index_copy_(0, slots, filled)
        out = torch.full((n, self.num_joints, 3), float("nan"), dtype=dt)
        if ready.any():
            r = np.flatnonzero(ready)
            m = r.size
            # window of the emitted frame e = c - delay (c: the frame just pushed): frames
            # e + lo (and e + hi), clamped at 0; never past c
            emit = counts[r, None] - self.delay
            for offs, dst in ((self._lo, self.window), (self._hi, self._window_hi)):
                if dst is None:
                    continue
                frame_idx = np.maximum(emit + offs[None, :], 0)
                flat = (idx[r, None] * (R + 1) + frame_idx % R).reshape(-1)
                torch.index_select(self._ring_flat, 0, torch.from_numpy(flat).to(dev),
                                   out=dst.view(-1, self.num_joints, 2)[:m * T])
            if self._window_hi is not None:
                self.window[:m] = self.sampling.blend(self.window[:m], self._window_hi[:m])
            pred = self._forward(self.window[:m])
            if m == n:
                out = pred.to("cpu", dt)
            else:
                out[torch.from_numpy(r)] = pred.to("cpu", dt)
        return out

    # ------------------------------------------------------------------ CUDA graph path
    def _setup_cuda_graph(self) -> None:
        S, V = self.num_streams, self.num_joints
        dev, dt = self.device, self.dtype
        self._h_frames = torch.zeros(S, V, 2, dtype=dt).pin_memory()
        self._h_scores = torch.ones(S, V, dtype=dt).pin_memory()
        self._h_active = torch.zeros(S, dtype=torch.bool).pin_memory()
        self._h_out = torch.zeros(S, V, 3, dtype=dt).pin_memory()
        self._d_frames = torch.zeros(S, V, 2, device=dev, dtype=dt)
        self._d_scores = torch.ones(S, V, device=dev, dtype=dt)
        self._d_active = torch.zeros(S, dtype=torch.bool, device=dev)
        self._d_counts = torch.zeros(S, dtype=torch.int64, device=dev)
        self._d_out = torch.zeros(S, V, 3, device=dev, dtype=dt)
        self._copy_stream = torch.cuda.current_stream(dev)
        # warm up (with no active stream the step changes no state), then capture
        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                self._graph_step()
        torch.cuda.current_stream(dev).wait_stream(side)
        torch.cuda.synchronize(dev)
        self._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self._graph), torch.inference_mode():
            self._graph_step()
        torch.cuda.synchronize(dev)

    def _graph_step(self) -> None:
        """The whole steady-state step on device tensors only (captured in the CUDA graph)."""
        R = self.ring_len
        active = self._d_active
        seen = self._seen
        filled = _fill_step(self._d_frames, self._d_scores, self._last, seen, self.min_score)
        valid = _valid(self._d_frames, self._d_scores, self.min_score)
        act = active[:, None]
        self._last.copy_(torch.where(act[..., None], filled, self._last))
        self._seen.copy_(torch.where(act, seen | valid, self._seen))
        # inactive streams write their (unchanged) frame to the scratch slot T
        slot = torch.where(active, self._d_counts % R, torch.full_like(self._d_counts, R))
        self._ring_flat.index_copy_(0, self._stream_base + slot, filled)
        self._d_counts.add_(active.to(torch.int64))
        emit = self._d_counts - 1 - self.delay
        for offs, dst in ((self._d_lo, self.window), (self._d_hi, self._window_hi)):
            if dst is None:
                continue
            frames = (emit[:, None] + offs[None, :]).clamp_(min=0) % R
            flat = (self._stream_base[:, None] + frames).reshape(-1)
            torch.index_select(self._ring_flat, 0, flat, out=dst.view(-1, self.num_joints, 2))
        window = self.window
        if self._window_hi is not None:
            window = self.sampling.blend(self.window, self._window_hi)
        self._d_out.copy_(self._forward(window))

    def _push_graph(self, idx, frames, scores):
        S = self.num_streams
        self._h_active.zero_()
        self._h_active[torch.from_numpy(idx)] = True
        self._h_frames[torch.from_numpy(idx)] = frames.to("cpu", self.dtype)
        if scores is None:
            self._h_scores.fill_(float("inf"))  # no scores: only NaN/inf marks a joint missing
        else:
            self._h_scores[torch.from_numpy(idx)] = scores.to("cpu", self.dtype)
        self._d_frames.copy_(self._h_frames, non_blocking=True)
        self._d_scores.copy_(self._h_scores, non_blocking=True)
        self._d_active.copy_(self._h_active, non_blocking=True)
        self._graph.replay()
        self._h_out.copy_(self._d_out, non_blocking=True)
        torch.cuda.current_stream(self.device).synchronize()
        out = self._h_out if idx.size == S else self._h_out[torch.from_numpy(idx)]
        return out

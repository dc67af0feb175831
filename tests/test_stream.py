"""StreamingLifter against the offline reference lift_sequence: exactness in both modes, several
window lengths and streams, staggered starts, flip TTA, missing data, errors, memory."""
import numpy as np
import pytest
import torch
from _tiny_models import randomize_bn_affine_

from posekernels import lift_sequence
from posekernels.models import GLAGCN, GlobalNodeGCN, released_sagcn
from posekernels.stream import StreamingLifter, build_plan, fill_missing

PLAN_WINOGRAD_BOUND = 5e-5
TOL = 1e-5
# Streaming and lift_sequence run the same plan on batches of other sizes, and on one thread the
# CPU kernels' blocking (Winograd tiles, product panels) depends on the batch: over 24 random
# models of test_stream_equals_lift_sequence (outputs scaled to ~1, T = 27, with and without
# window_norm) the largest difference was 1.2e-4 on one thread (8.7e-5 without window_norm) and
# 0 on two; the shipped lifters in the demo differ by 1.8e-7 m.
STREAM_BATCH_BOUND = 5e-4


def _model(T, causal=False, channels=8, seed=0, **kw):
    """A small random GLA-GCN with non-trivial BatchNorm statistics, its output rescaled to about
    1 (metres-sized, like a trained model) so that an absolute 1e-5 is a meaningful bound."""
    torch.manual_seed(seed)
    m = GLAGCN(receptive_field=T, channels=channels, causal=causal, **kw).eval()
    g = torch.Generator().manual_seed(seed + 1)
    randomize_bn_affine_(m, g, bias=True)
    with torch.no_grad():
        scale = m(torch.randn(8, T, 17, 2, generator=g)).abs().max().item()
        for name, p in m.head.named_parameters():
            p.div_(scale)
    return m


def _stream_all(lifter, seqs, streams=None):
    """Push (S, F, V, 2) frame by frame; return per-stream lists of emitted poses + flush."""
    S, F = seqs.shape[:2]
    outs = [[] for _ in range(S)]
    for f in range(F):
        r = lifter.push(seqs[:, f])
        if r is None:
            assert not lifter.last_ready.any()
            continue
        for s in np.flatnonzero(lifter.last_ready):
            assert lifter.last_frame_index[s] == len(outs[s])
            outs[s].append(torch.as_tensor(r[s]))
    rest = lifter.flush()
    if S == 1:
        rest = [rest]
    return [torch.stack(outs[s] + [torch.as_tensor(p) for p in rest[s]]) for s in range(S)]


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [3, 9, 27])
@pytest.mark.parametrize("window_norm", [False, True])
def test_stream_equals_lift_sequence(causal, T, window_norm):
    model = _model(T, causal, window_norm=window_norm)
    g = torch.Generator().manual_seed(T)
    for frames in (max(T // 2, 1), T + 2):
        seqs = torch.randn(3, frames, 17, 2, generator=g) * 0.5
        lifter = StreamingLifter(model, num_streams=3,
                                 mode="causal" if causal else "centered")
        got = _stream_all(lifter, seqs)
        for s in range(3):
            want = lift_sequence(model, seqs[s])
            assert got[s].shape == want.shape
            assert (got[s] - want).abs().max().item() < STREAM_BATCH_BOUND


@pytest.mark.parametrize("fold", [True, False])
def test_single_stream_numpy_and_emission_timing(fold):
    T = 9
    model = _model(T)
    seq = np.random.default_rng(0).normal(size=(15, 17, 2)).astype(np.float32)
    lifter = StreamingLifter(model, fold=fold)
    assert lifter.latency_frames == 4
    outs = []
    for f in range(15):
        r = lifter.push(seq[f])
        if f < 4:
            assert r is None
        else:
            assert isinstance(r, np.ndarray) and r.shape == (17, 3)
            assert lifter.last_frame_index[0] == f - 4
            outs.append(r)
    rest = lifter.flush()
    assert isinstance(rest, np.ndarray) and rest.shape == (4, 17, 3)
    got = np.concatenate([np.stack(outs), rest])
    np.testing.assert_allclose(got, lift_sequence(model, seq), atol=TOL, rtol=0)
    # flush started the stream over: the same sequence again gives the same poses
    again = [lifter.push(seq[f]) for f in range(15)]
    np.testing.assert_allclose(np.stack([a for a in again if a is not None]), got[:11], atol=TOL)


def test_causal_emits_at_once_and_flush_is_empty():
    model = _model(9, causal=True)
    lifter = StreamingLifter(model, num_streams=2)
    seqs = torch.randn(2, 5, 17, 2)
    for f in range(5):
        r = lifter.push(seqs[:, f])
        assert r is not None and r.shape == (2, 17, 3)
        assert lifter.last_frame_index.tolist() == [f, f]
    rest = lifter.flush()
    assert rest.shape == (2, 0, 17, 3)


def test_staggered_streams_and_subset_pushes():
    """Streams start at different times and are pushed in different subsets; each stream still
    equals its own offline lift."""
    T = 9
    model = _model(T)
    g = torch.Generator().manual_seed(3)
    S = 4
    lengths = [12, 7, 3, 10]
    seqs = [torch.randn(n, 17, 2, generator=g) for n in lengths]
    starts = [0, 2, 5, 1]
    lifter = StreamingLifter(model, num_streams=S)
    outs = [[] for _ in range(S)]
    for tick in range(30):
        active = [s for s in range(S) if starts[s] <= tick < starts[s] + lengths[s]]
        if not active:
            continue
        frames = torch.stack([seqs[s][tick - starts[s]] for s in active])
        r = lifter.push(frames, streams=active)
        if r is not None:
            for row, s in enumerate(active):
                if lifter.last_ready[row]:
                    outs[s].append(r[row])
                else:
                    assert torch.isnan(r[row]).all()
        for s in active:
            if tick == starts[s] + lengths[s] - 1:
                outs[s].extend(lifter.flush(s))
                assert lifter.counts[s] == 0
    for s in range(S):
        want = lift_sequence(model, seqs[s])
        assert (torch.stack(outs[s]) - want).abs().max().item() < TOL


def test_flush_with_unequal_pending_returns_list():
    model = _model(9)
    lifter = StreamingLifter(model, num_streams=2)
    lifter.push(torch.randn(17, 2), streams=0)
    lifter.push(torch.randn(17, 2), streams=0)
    lifter.push(torch.randn(17, 2), streams=1)
    rest = lifter.flush()
    assert isinstance(rest, list) and [r.shape[0] for r in rest] == [2, 1]


def test_flip_tta_matches_lift_sequence():
    model = _model(9)
    seq = torch.randn(1, 12, 17, 2)
    lifter = StreamingLifter(model, flip_tta=True)
    got = _stream_all(lifter, seq)[0]
    want = lift_sequence(model, seq[0], flip_tta=True)
    assert (got - want).abs().max().item() < TOL


def test_released_and_single_frame_models():
    model = released_sagcn(9, channels=8).eval()
    seq = torch.randn(1, 11, 17, 2)
    got = _stream_all(StreamingLifter(model), seq)[0]
    assert (got - lift_sequence(model, seq[0])).abs().max().item() < 1e-4 * max(
        1.0, lift_sequence(model, seq[0]).abs().max().item())
    single = GlobalNodeGCN(channels=16).eval()
    seq = torch.randn(1, 6, 16, 2)
    lifter = StreamingLifter(single)
    outs = [lifter.push(seq[0, f]) for f in range(6)]
    assert all(o is not None for o in outs)
    torch.testing.assert_close(torch.stack(outs), lift_sequence(single, seq[0]), atol=1e-5,
                               rtol=1e-5)
    assert lifter.flush().shape == (0, 16, 3)


@pytest.mark.parametrize("kw", [dict(head="fc", temporal="avgpool"), dict(block="stgcn"),
                                dict(head="shared", sequence_branch=False), dict(causal=True),
                                dict(causal=True, temporal="avgpool"),
                                dict(causal=True, window_norm=True)])
def test_plan_equals_model(kw):
    model = _model(27, **kw)
    x = torch.randn(4, 27, 17, 2)
    with torch.no_grad():
        want = model(x)[:, 0]
        for backend in (None, "reference"):
            got = build_plan(model, backend=backend)(x)
            # the default CPU plan's temporal convolutions use Winograd F(4, 3): over 160 random
            # draws of these models (outputs scaled to |y| <= 1) its largest deviation from the
            # model's direct convolutions was 1.01e-5 (median 4.8e-7); the reference plan is
            # direct and stays within TOL
            bound = PLAN_WINOGRAD_BOUND if backend is None else TOL
            assert (got - want).abs().max().item() < bound


def test_mode_mismatch_and_bad_shapes_raise():
    centred, causal = _model(9), _model(9, causal=True)
    with pytest.raises(ValueError, match="does not match the model"):
        StreamingLifter(centred, mode="causal")
    with pytest.raises(ValueError, match="does not match the model"):
        StreamingLifter(causal, mode="centered")
    with pytest.raises(ValueError, match="mode must be"):
        StreamingLifter(centred, mode="online")
    with pytest.raises(ValueError, match="num_streams"):
        StreamingLifter(centred, num_streams=0)
    lifter = StreamingLifter(centred, num_streams=2)
    with pytest.raises(ValueError, match=r"\(2, 17, 2\)"):
        lifter.push(torch.randn(17, 2))
    with pytest.raises(ValueError, match=r"shape"):
        lifter.push(torch.randn(2, 16, 2))
    with pytest.raises(ValueError, match="out of range"):
        lifter.push(torch.randn(17, 2), streams=5)
    with pytest.raises(ValueError, match="scores"):
        lifter.push(torch.randn(2, 17, 2), scores=torch.ones(2, 16))
    with pytest.raises(TypeError):
        lifter.push("frames")
    assert lifter.counts.tolist() == [0, 0], "a rejected push must not change the state"


def test_missing_data_never_raises_and_matches_offline_fill():
    T = 9
    model = _model(T)
    rng = np.random.default_rng(1)
    seq = rng.normal(size=(20, 17, 2)).astype(np.float32)
    scores = rng.uniform(0, 1, size=(20, 17)).astype(np.float32)
    seq[3, 5] = np.nan
    seq[4, :, :] = np.nan                       # a frame with nothing valid
    seq[0, 2] = np.inf                          # never seen yet at the first frame
    scores[7, :] = 0.0                          # a frame with every score too low
    scores[9, 1] = np.nan
    lifter = StreamingLifter(model, min_score=0.3)
    outs = [lifter.push(seq[f], scores[f]) for f in range(20)]
    got = np.concatenate([np.stack([o for o in outs if o is not None]), lifter.flush()])
    assert np.isfinite(got).all()
    filled = fill_missing(seq, scores, min_score=0.3)
    assert np.isfinite(filled).all()
    np.testing.assert_array_equal(filled[4], filled[3])            # nothing valid: repeat
    np.testing.assert_array_equal(filled[7], filled[6])
    valid0 = np.isfinite(seq[0]).all(-1) & (scores[0] >= 0.3)
    np.testing.assert_allclose(filled[0, 2], seq[0][valid0].mean(0), rtol=1e-6)
    np.testing.assert_allclose(got, lift_sequence(model, filled), atol=TOL, rtol=0)


def test_far_coordinates_are_missing_joints():
    """A joint beyond MAX_COORDINATE (normalised units) is missing, exactly as NaN is: the stream
    gives the poses it gives with NaN there, finite, and warns once (pixels passed by mistake);
    fill_missing follows the same rule and lift_sequence refuses such input by name."""
    from posekernels.stream import MAX_COORDINATE

    model = _model(9, causal=True)
    rng = np.random.default_rng()
    seq = rng.uniform(-0.8, 0.8, size=(14, 17, 2))
    far = seq.copy()
    frames, joints = rng.choice(14, 4, replace=False), rng.choice(17, 4)
    for f, j, v in zip(frames, joints, (1e30, -5e3, 1e300, MAX_COORDINATE * 1.01)):
        far[f, j, rng.integers(2)] = v
    nan = far.copy()
    nan[np.abs(far) > MAX_COORDINATE] = np.nan
    edge = seq.copy()
    edge[0, 0, 0] = MAX_COORDINATE  # at the bound: a valid joint
    assert np.isfinite(fill_missing(edge)).all() and fill_missing(edge)[0, 0, 0] == MAX_COORDINATE
    np.testing.assert_array_equal(fill_missing(far), fill_missing(nan))
    finite_far = np.where(np.isfinite(far) & (np.abs(far) < 1e200), far, 0.0)  # no bound: kept
    np.testing.assert_array_equal(fill_missing(finite_far, max_coordinate=np.inf), finite_far)
    with pytest.warns(UserWarning, match="treated as missing joints") as record:
        a = StreamingLifter(model)
        got = np.stack([a.push(f) for f in far])
    assert len(record) == 1 and "normalize_screen_coordinates" in str(record[0].message)
    b = StreamingLifter(model)
    want = np.stack([b.push(f) for f in nan])
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, lift_sequence(model, fill_missing(nan)), atol=TOL, rtol=0)
    with pytest.raises(ValueError, match=r"keypoints2d has coordinates up to 5000.*pixels"):
        lift_sequence(model, np.where(np.abs(far) > 1e4, 0.0, far))


def test_all_missing_first_frame_gives_zeros():
    filled = fill_missing(np.full((2, 17, 2), np.nan))
    assert (filled == 0).all()


def test_memory_flat_over_many_pushes():
    """A small soak: after warm-up, pushing many frames allocates nothing that stays."""
    import gc
    import tracemalloc

    model = _model(9)
    lifter = StreamingLifter(model, num_streams=4)
    frames = torch.randn(4, 17, 2)
    for _ in range(30):
        lifter.push(frames)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    ring_ptr = lifter.ring.data_ptr()
    for i in range(200):
        lifter.push(frames)
        if i % 50 == 0:
            lifter.reset(1)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert lifter.ring.data_ptr() == ring_ptr
    assert after - before < 64 * 1024, f"python heap grew by {after - before} bytes"


@pytest.mark.gpu
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("fps", [None, 30.0])
def test_cuda_graph_step_equals_lift_sequence(causal, fps):
    model = _model(9, causal).cuda()
    g = torch.Generator().manual_seed(5)
    seqs = torch.randn(3, 14, 17, 2, generator=g)
    seqs[1, 4, 3] = float("nan")  # missing data inside the captured step
    rate = dict(fps=fps, model_fps=50.0) if fps else {}
    lifter = StreamingLifter(model, num_streams=3, device="cuda", **rate)
    assert lifter.cuda_graph
    got = _stream_all(lifter, seqs)
    for s in range(3):
        want = lift_sequence(model, torch.from_numpy(fill_missing(seqs[s].numpy())).cuda(),
                             **rate)
        assert (got[s].cpu() - want.cpu()).abs().max().item() < TOL
    # subsets and staggered starts go through the same captured graph
    lifter.push(seqs[0, 0], streams=1)
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for i in range(500):
        lifter.push(seqs[:, i % 14])
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before


def test_tune_cpu_allocator_applies_on_glibc():
    import platform

    import posekernels

    applied = posekernels.tune_cpu_allocator()
    if platform.libc_ver()[0] == "glibc":
        assert applied is True
        assert posekernels.tune_cpu_allocator() is True  # idempotent
    else:
        assert applied is False


def _run_streams(lifter, seqs, order):
    """Push stream s's frames with ``streams=s`` (from the calling thread); return per stream
    (frame index, pose) pairs, the flush included (index -1)."""
    outs = {}
    for s in order:
        got = []
        for f in range(seqs.shape[1]):
            r = lifter.push(seqs[s, f], streams=s)
            ready = lifter.last_ready  # this thread's own push
            if r is None:
                assert not ready.any()
                continue
            got.append((int(lifter.last_frame_index[0]), np.array(r)))
        got += [(-1, np.array(p)) for p in lifter.flush(s)]
        outs[s] = got
    return outs


def test_two_threads_on_one_lifter_match_single_threaded():
    """Two threads pushing different streams into one lifter get exactly what one thread gets
    (the lifter serialises push/flush/reset on a lock; last_frame_index is per thread)."""
    import threading

    model = _model(9)
    seqs = np.random.default_rng(7).normal(size=(2, 60, 17, 2)).astype(np.float32)
    want = _run_streams(StreamingLifter(model, num_streams=2), seqs, [0, 1])
    assert [i for i, _ in want[0]] == list(range(56)) + [-1] * 4
    for trial in range(5):
        lifter = StreamingLifter(model, num_streams=2)
        outs, errors = {}, []
        start = threading.Barrier(2)

        def work(s):
            try:
                start.wait()
                outs.update(_run_streams(lifter, seqs, [s]))
            except Exception as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(s,)) for s in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        for s in range(2):
            assert [i for i, _ in outs[s]] == [i for i, _ in want[s]], f"trial {trial}"
            np.testing.assert_allclose(np.stack([p for _, p in outs[s]]),
                                       np.stack([p for _, p in want[s]]), atol=1e-6,
                                       err_msg=f"trial {trial}, stream {s}")


def test_bad_arguments_are_refused_at_the_call():
    from posekernels.stream import MAX_STREAMS

    model = _model(9)
    lifter = StreamingLifter(model, num_streams=3)
    frame = np.zeros((17, 2), dtype=np.float32)
    for bad in ([1.7], ["12"], [True], True, "12", 1.0, np.array([1.0]), torch.tensor([True]),
                [np.float64(1)]):
        with pytest.raises(TypeError, match="streams must be an int or a sequence of ints"):
            lifter.push(frame[None], streams=bad)
    for call in (lifter.flush, lifter.reset):
        with pytest.raises(TypeError, match="stream must be an int"):
            call([1.7])
        with pytest.raises(TypeError, match="stream must be an int"):
            call(True)
    assert lifter.counts.tolist() == [0, 0, 0], "a rejected call must not change the state"
    # integer arrays and numpy ints are stream indices
    lifter.push(np.zeros((2, 17, 2)), streams=np.array([0, 2]))
    lifter.push(frame, streams=np.int64(1))
    lifter.push(np.zeros((1, 17, 2)), streams=torch.tensor([1]))
    assert lifter.counts.tolist() == [1, 2, 1]

    with pytest.raises(ValueError, match="max_batch must be a positive int"):
        StreamingLifter(model, max_batch=0)
    with pytest.raises(TypeError, match="max_batch must be a positive int"):
        StreamingLifter(model, max_batch=2.5)
    with pytest.raises(ValueError, match="min_score must be a finite real number"):
        StreamingLifter(model, min_score=float("nan"))
    with pytest.raises(TypeError, match="min_score must be a finite real number"):
        StreamingLifter(model, min_score="0.3")
    with pytest.raises(TypeError, match="min_score"):
        StreamingLifter(model, min_score=True)
    with pytest.raises(ValueError, match=rf"num_streams must be an int in \[1, {MAX_STREAMS}\]"):
        StreamingLifter(model, num_streams=10 ** 8)  # refused before any allocation
    with pytest.raises(ValueError, match="num_streams"):
        StreamingLifter(model, num_streams=-1)
    for bad in (1e8, True, "8", 2.0):
        with pytest.raises(TypeError, match="num_streams must be an int"):
            StreamingLifter(model, num_streams=bad)
    assert StreamingLifter(model, num_streams=np.int32(2), max_batch=1,
                           min_score=0).num_streams == 2

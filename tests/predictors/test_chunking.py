"""Chunked prediction: spans, IoU matching and track stitching on synthetic masks."""

from __future__ import annotations

import numpy as np
import pytest

from wsovvis_dagster.predictors import PredictorOutput, compose_id_maps
from wsovvis_dagster.predictors.chunking import chunk_spans, match_tracks, predict_chunked


@pytest.mark.parametrize("t,k,o", [(50, 16, 4), (200, 64, 8), (65, 64, 8), (10, 4, 1),
                                   (9, 3, 0), (1000, 128, 8)])
def test_chunk_spans_cover_with_overlap_and_fixed_size(t, k, o):
    spans = chunk_spans(t, k, o)
    assert spans[0][0] == 0 and spans[-1][1] == t
    assert all(b - a == k for a, b in spans)  # one input shape for the model
    for (a0, b0), (a1, _b1) in zip(spans, spans[1:], strict=False):
        assert a0 < a1 and b0 - a1 >= o  # at least `overlap` shared frames
        assert b0 >= a1  # no gap


def test_chunk_spans_short_and_invalid():
    assert chunk_spans(5, 64, 8) == [(0, 5)]
    assert chunk_spans(0, 64, 8) == []
    with pytest.raises(ValueError):
        chunk_spans(10, 4, 4)
    with pytest.raises(ValueError):
        chunk_spans(10, 0, 0)


def test_match_tracks_one_to_one_above_threshold():
    prev = np.zeros((2, 8, 8), np.uint16)
    cur = np.zeros((2, 8, 8), np.uint16)
    prev[:, :4, :4], cur[:, :4, :4] = 1, 2  # same object, other id
    prev[:, 4:, 4:], cur[:, 4:, 5:] = 2, 1  # shifted by one column: IoU 0.75
    cur[:, :2, 6:] = 3  # new object
    assert match_tracks(prev, cur, 0.5) == {2: 1, 1: 2}
    assert match_tracks(prev, cur, 0.8) == {2: 1}
    assert match_tracks(np.zeros_like(prev), cur, 0.5) == {}


def synthetic_video(t=60, h=36, w=48):
    """Ground-truth id maps: id 1 moves right all video, id 2 lives in frames 10..39,
    id 3 appears at frame 45. Frames encode their index (for the fake predictor)."""
    gt = np.zeros((t, h, w), np.uint16)
    for i in range(t):
        x = (i // 2) % (w - 10)
        gt[i, 2:12, x:x + 10] = 1
        if 10 <= i < 40:
            gt[i, 20:30, 5:20] = 2
        if i >= 45:
            gt[i, 20:34, 30:44] = 3
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(t, dtype=np.uint8)[:, None, None]
    return gt, frames


GT_SCORES = {1: 0.9, 2: 0.8, 3: 0.7}


def chunk_predictor(gt, calls, scramble=True):
    """An oracle predictor that numbers tracks differently in every chunk."""

    def predict(frames):
        idx = frames[:, 0, 0, 0].astype(int)
        calls.append(len(idx))
        clip = gt[idx]
        present = [g for g in (1, 2, 3) if (clip == g).any()]
        order = present[::-1] if scramble and len(calls) % 2 else present
        masks = np.stack([clip == g for g in order]) if order else np.zeros((0, *clip.shape), bool)
        scores = np.array([GT_SCORES[g] - 0.01 * len(calls) for g in order])
        return compose_id_maps(masks, scores)

    return predict


def test_stitching_recovers_tracks_across_chunks():
    gt, frames = synthetic_video()
    calls: list[int] = []
    out = predict_chunked(chunk_predictor(gt, calls), frames, chunk_size=16, overlap=4)
    assert max(calls) <= 16  # the model never sees more than one chunk
    assert out.id_maps.dtype == np.uint16 and out.id_maps.shape == gt.shape
    np.testing.assert_array_equal(out.id_maps, gt)  # same tracks, same ids (score order)
    assert list(out.scores) == [1, 2, 3]
    assert out.scores[1] > out.scores[2] > out.scores[3]


def test_single_chunk_is_passed_through():
    gt, frames = synthetic_video(t=12)
    calls: list[int] = []
    out = predict_chunked(chunk_predictor(gt, calls, scramble=False), frames,
                          chunk_size=16, overlap=4)
    assert calls == [12]
    np.testing.assert_array_equal(out.id_maps, gt)


def test_no_overlap_means_new_tracks_per_chunk():
    gt, frames = synthetic_video(t=32)
    out = predict_chunked(chunk_predictor(gt, []), frames, chunk_size=16, overlap=0)
    assert len(out.scores) == 4  # id 1 and id 2 each start again in the second chunk
    assert set(np.unique(out.id_maps)) == {0, 1, 2, 3, 4}


def test_prefetch_gives_the_same_result():
    gt, frames = synthetic_video()
    a = predict_chunked(chunk_predictor(gt, []), frames, chunk_size=16, overlap=4)
    b = predict_chunked(chunk_predictor(gt, []), frames, chunk_size=16, overlap=4,
                        prefetch=True)
    np.testing.assert_array_equal(a.id_maps, b.id_maps)
    assert a.scores == b.scores


def test_many_ids_per_chunk_take_the_wide_path():
    t, h, w = 12, 20, 300
    gt = np.zeros((t, h, w), np.uint16)
    for k in range(280):  # 280 one-pixel-wide tracks: more than a uint8 LUT holds
        gt[:, :, k] = k + 1
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 0] = np.arange(t, dtype=np.uint8)[:, None, None]

    def predict(clip):
        sub = gt[clip[:, 0, 0, 0].astype(int)]
        return PredictorOutput(sub.copy(), {k: 1.0 - k * 1e-3 for k in range(1, 281)})

    out = predict_chunked(predict, frames, chunk_size=8, overlap=4)
    np.testing.assert_array_equal(out.id_maps, gt)


def test_wrong_shape_from_predictor_is_an_error():
    gt, frames = synthetic_video(t=20)

    def bad(clip):
        return PredictorOutput(np.zeros((len(clip), 5, 5), np.uint16), {})

    with pytest.raises(ValueError, match="shape"):
        predict_chunked(bad, frames, chunk_size=8, overlap=2)


def test_compose_on_device_matches_compose_id_maps():
    torch = pytest.importorskip("torch")
    from wsovvis_dagster.predictors.videocutler import compose_on_device, queue_fetch

    rng = np.random.default_rng(3)
    masks = rng.random((6, 3, 10, 12)) > 0.7
    masks[4] = False  # an empty track is dropped
    masks[5] = masks[0]  # covered by a better track: vanishes
    scores = np.array([0.9, 0.5, 0.5, 0.7, 0.95, 0.3], np.float32)  # a tie, kept in order
    ref = compose_id_maps(masks, scores)
    out = queue_fetch(*compose_on_device(torch.from_numpy(masks), torch.from_numpy(scores)))()
    np.testing.assert_array_equal(out.id_maps, ref.id_maps)
    assert out.id_maps.dtype == np.uint16
    assert list(out.scores.values()) == pytest.approx(list(ref.scores.values()))
    assert list(out.scores) == list(ref.scores)


def test_compose_on_device_keep_is_the_confidence_filter():
    """Tracks left out by `keep` (under the confidence) own no pixel: the same id map as
    composing only the kept tracks, though no boolean indexing (a host sync) happens."""
    torch = pytest.importorskip("torch")
    from wsovvis_dagster.predictors.videocutler import compose_on_device, queue_fetch

    rng = np.random.default_rng(5)
    masks = rng.random((8, 4, 9, 11)) > 0.6
    scores = rng.random(8).astype(np.float32)
    keep = scores >= 0.5
    keep[np.argmax(scores)] = False  # the best-scoring track is under the threshold here
    ref = compose_id_maps(masks[keep], scores[keep])
    out = queue_fetch(*compose_on_device(torch.from_numpy(masks), torch.from_numpy(scores),
                                         keep=torch.from_numpy(keep)))()
    np.testing.assert_array_equal(out.id_maps, ref.id_maps)
    assert list(out.scores.values()) == pytest.approx(list(ref.scores.values()))
    none = queue_fetch(*compose_on_device(torch.from_numpy(masks), torch.from_numpy(scores),
                                          keep=torch.zeros(8, dtype=torch.bool)))()
    assert not none.id_maps.any() and none.scores == {}


@pytest.mark.gpu
def test_composing_and_queueing_the_fetch_on_cuda_never_waits_for_the_device():
    """`compose_on_device` + `queue_fetch` queue work only (CUDA's sync debug mode raises on
    any host sync), so the mask loop can queue the next chunk behind them; the collector then
    waits once and gives `compose_id_maps`' result."""
    torch = pytest.importorskip("torch")
    from wsovvis_dagster.predictors.videocutler import compose_on_device, queue_fetch

    rng = np.random.default_rng(7)
    masks = rng.random((10, 4, 33, 45)) > 0.7
    scores = rng.random(10).astype(np.float32)
    keep = scores >= 0.3
    dev_masks = torch.from_numpy(masks).cuda()
    dev_scores, dev_keep = torch.from_numpy(scores).cuda(), torch.from_numpy(keep).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        collect = queue_fetch(*compose_on_device(dev_masks, dev_scores, keep=dev_keep))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    out = collect()
    ref = compose_id_maps(masks[keep], scores[keep])
    np.testing.assert_array_equal(out.id_maps, ref.id_maps)
    assert list(out.scores.values()) == pytest.approx(list(ref.scores.values()))

"""IoU linker: synthetic fragments with known tracks, and OSVOS masks with shuffled ids."""

import numpy as np
import pytest
from PIL import Image

from wsovvis_dagster.ytvis.linking import (
    LinkParams,
    frame_consistency,
    link_fragments,
    restore_original_ids,
    shuffle_ids,
)


def squares(positions: list[list[tuple[int, int] | None]], size=10, shape=(40, 120)):
    """`(T, H, W)` maps: object k (id k+1) is a size x size square at positions[t][k]."""
    maps = np.zeros((len(positions), *shape), dtype=np.uint8)
    for t, row in enumerate(positions):
        for k, pos in enumerate(row):
            if pos is not None:
                y, x = pos
                maps[t, y : y + size, x : x + size] = k + 1
    return maps


def test_shuffled_ids_of_moving_objects_are_relinked():
    truth = squares([[(5, 2 + 3 * t), (22, 100 - 3 * t)] for t in range(12)])
    shuffled = shuffle_ids(truth, np.random.default_rng(0))
    assert frame_consistency(shuffled, truth) < 0.2  # the shuffle really breaks the tracks
    result = link_fragments(shuffled)
    assert frame_consistency(result.id_maps, truth) == 1.0
    assert result.num_tracks == 2 and result.id_maps.dtype == np.uint8


def test_original_ids_are_recoverable():
    truth = squares([[(5, 2 + 3 * t), (22, 100 - 3 * t)] for t in range(6)])
    shuffled = shuffle_ids(truth, np.random.default_rng(1))
    result = link_fragments(shuffled)
    assert np.array_equal(restore_original_ids(result), shuffled)
    for (t, orig), track in result.mapping.items():
        assert np.array_equal(shuffled[t] == orig, result.id_maps[t] == track)
        assert result.source_ids(track)[t] == orig


def test_gap_up_to_max_gap_is_bridged_longer_gaps_start_a_new_track():
    def positions(gap):
        return [[(10, 20 + t)] if not (3 <= t < 3 + gap) else [None] for t in range(12)]

    bridged = link_fragments(squares(positions(4)), max_gap=4)
    assert bridged.num_tracks == 1
    split = link_fragments(squares(positions(5)), max_gap=4)
    assert split.num_tracks == 2
    assert set(np.unique(split.id_maps[8:])) == {0, 2}


def test_velocity_keeps_a_fast_object_on_its_track():
    # steps of 5 then 7 px: a 10 px square moved 7 px overlaps its last mask with IoU
    # 3/17 < 0.2, but moved by its velocity (5 px, then 7 px) it overlaps enough
    xs = np.cumsum([0, 5] + [7] * 10)
    truth = squares([[(10, int(x))] for x in xs], shape=(40, 200))
    result = link_fragments(shuffle_ids(truth, np.random.default_rng(2)), iou_threshold=0.2)
    assert result.num_tracks == 1


def test_assignment_is_one_to_one():
    # a square splits into two halves: only one half can continue the track
    maps = np.zeros((2, 20, 20), dtype=np.uint8)
    maps[0, 5:15, 5:15] = 1
    maps[1, 5:15, 5:10] = 3
    maps[1, 5:15, 10:15] = 4
    result = link_fragments(maps, iou_threshold=0.3)
    assert result.num_tracks == 2
    assert result.mapping[(0, 1)] in (result.mapping[(1, 3)], result.mapping[(1, 4)])


def test_threshold_separates_unrelated_objects_and_empty_frames_pass():
    maps = np.zeros((4, 20, 40), dtype=np.uint8)
    maps[0, 0:10, 0:10] = 1
    maps[2, 0:10, 25:35] = 1  # same id, far away, after an empty frame: a different object
    result = link_fragments(maps)
    assert result.num_tracks == 2 and not result.id_maps[1].any() and not result.id_maps[3].any()


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="iou_threshold"):
        LinkParams(iou_threshold=0.0)
    with pytest.raises(ValueError, match="max_gap"):
        link_fragments(np.zeros((2, 4, 4), np.uint8), max_gap=-1)
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        link_fragments(np.zeros((4, 4), np.uint8))


@pytest.mark.shared
def test_osvos_tracks_survive_shuffled_ids(shared_data):
    """Measured accuracy on real predictions (see linking.py for the numbers behind defaults)."""
    results = {}
    for seq in ("horsejump-high", "scooter-black"):
        files = sorted((shared_data / "davis" / "osvos" / seq).glob("*.png"))
        truth = np.stack([np.array(Image.open(p)) for p in files])
        shuffled = shuffle_ids(truth, np.random.default_rng(0))
        linked = link_fragments(shuffled)
        assert np.array_equal(restore_original_ids(linked), shuffled)
        results[seq] = (frame_consistency(linked.id_maps, truth), linked, truth)
    assert results["horsejump-high"][0] == 1.0
    # scooter-black: OSVOS's object 1 turns into scattered specks after frame 16 (IoU ~0 from
    # frame to frame), so only the 17 frames before plus the 5 where it is absent can be right:
    # 22/43 is the ceiling of any overlap-based linker, and object 2 must be one track.
    accuracy, linked, truth = results["scooter-black"]
    assert accuracy == pytest.approx(22 / 43)
    assert len(np.unique(linked.id_maps[truth == 2])) == 1

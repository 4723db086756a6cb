"""Examination videos: `kvasir synth --video true`, `kvasir predict VIDEO` (frames.csv, segments.csv, timeline.png),
the temporal smoothing, and videos that cannot be read."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvasir_mobileone.cli import main
from kvasir_mobileone.deploy.timeline import merge_short, smooth, switches
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.examination import compare_timeline
from kvasir_mobileone.io import read_csv
from kvasir_mobileone.runs import (
    VIDEO_ANNOTATED_NAME,
    VIDEO_FRAMES_NAME,
    VIDEO_SEGMENTS_NAME,
    VIDEO_SUMMARY_NAME,
    VIDEO_TIMELINE_NAME,
)

CLASSES = "[dyed-lifted-polyps, dyed-resection-margins, esophagitis, normal-cecum]"  # conftest.TINY_CLASSES


@pytest.fixture(scope="module")
def examination(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exam")
    main(["synth", "--video", "true", "--dest", str(folder), "--scale", "0.25", "--classes", CLASSES, "--seed", "4"])
    return folder / "examination.mp4", folder / "examination_truth.csv"


@pytest.fixture(scope="module")
def watched(examination, ood_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("watched")
    summary = main(["predict", str(examination[0]), "--model", str(ood_run[1]), "--out", str(out)])[0]
    return out, summary


def test_predict_on_a_video_writes_frames_segments_and_the_timeline(examination, watched):
    out, summary = watched
    rows = read_csv(out / VIDEO_FRAMES_NAME)
    truth = read_csv(examination[1])
    assert summary["frames_decoded"] == len(rows) == round(float(truth[-1]["end"]) * 25)  # every frame, once
    assert summary["stopped"] is None
    times = [float(r["time"]) for r in rows]
    assert times == sorted(times) and times[1] - times[0] == pytest.approx(0.04, abs=1e-3)
    found = read_csv(out / VIDEO_SEGMENTS_NAME)
    assert sum(int(r["frames"]) for r in found) == len(rows)  # the segments cover every frame once
    classes = [r["class"] for r in found if r["class"] != "outside the training data"]
    assert [c for i, c in enumerate(classes) if i == 0 or c != classes[i - 1]] == CLASSES.strip("[]").split(", ")
    assert (out / VIDEO_TIMELINE_NAME).stat().st_size > 10_000
    assert json.loads((out / VIDEO_SUMMARY_NAME).read_text())["frames_classified"] == len(rows)


def test_the_smoothed_timeline_finds_the_boundaries_and_switches_less_at_no_cost(examination, watched):
    figures = compare_timeline(watched[0] / VIDEO_FRAMES_NAME, examination[1])
    assert figures["boundaries"] == 3
    assert figures["boundaries_found"] == 3, figures  # within 0.5 s of the truth
    assert figures["switches_smoothed"] < figures["switches_raw"], figures
    assert figures["switches_smoothed"] <= figures["switches_truth"] + 2, figures  # hardly a spurious switch
    assert figures["accuracy_difference_ci"][0] > 0, figures  # the smoothed labels are better, gaps included


def test_blank_frames_are_outside_and_the_annotated_video_shows_every_frame(examination, watched, ood_run, tmp_path):
    rows = read_csv(watched[0] / VIDEO_FRAMES_NAME)
    truth = read_csv(examination[1])
    outside = [(float(r["start"]), float(r["end"])) for r in truth if r["label"] == "outside the training data"]
    gaps = [(a, b) for a, b in outside if b - a < 1]  # the black gaps (the 2-s photo stretch is no blank)
    in_gap = [any(a + 0.02 < float(r["time"]) < b - 0.02 for a, b in gaps) for r in rows]
    assert sum(in_gap) > 30
    assert all(
        r["blank"] == "yes" and r["smoothed"] == "outside the training data"
        for r, g in zip(rows, in_gap, strict=True)
        if g
    )
    flashes = 2 * 2 * len(CLASSES.split(","))  # 2 white frames per segment, and their neighbours
    assert sum(r["blank"] == "yes" for r, g in zip(rows, in_gap, strict=True) if not g) <= flashes
    import av

    # one annotated video, with the heatmaps: every frame of the video, the label band on each, and the heatmap's
    # colours over the frame below the band (against the same frame of the source, scaled as annotate scales it)
    explained = main(
        ["predict", str(examination[0]), "--model", str(ood_run[1]), "--out", str(tmp_path / "heat")]
        + ["--annotate", "true", "--every", "5", "--explain", "true"]
    )[0]
    with av.open(str(tmp_path / "heat" / VIDEO_ANNOTATED_NAME)) as container:
        heated = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert explained["annotated"] == VIDEO_ANNOTATED_NAME and len(heated) == explained["frames_decoded"]
    picture = heated[len(heated) // 2]
    band = picture[: len(picture) // 10]  # the label band along the top: dark, with white text on it
    assert band.mean() < 90 and band.max() > 200
    height, width = picture.shape[:2]
    with av.open(str(examination[0])) as container:
        frames = container.decode(video=0)
        source = next(f for k, f in enumerate(frames) if k == len(heated) // 2)
        source = source.to_ndarray(width=width, height=height, format="rgb24")
    middle = height // 2  # below the band
    difference = np.abs(picture[middle:].astype(int) - source[middle:].astype(int)).mean()
    assert difference > 10, difference
    with pytest.raises(UserError, match="--ood_weight is an exponent in"):
        main(["predict", str(examination[0]), "--model", str(ood_run[1]), "--ood_weight", "-1"])


def noisy_sequence(seed=0, n=300, classes=3, right=0.55):
    """Three segments of n / 3 frames; each frame's probabilities favour its class only by a little, and a third
    of the frames favour a wrong one."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(classes), n // classes)
    probs = rng.dirichlet(np.ones(classes), len(truth)) * (1 - right)
    shown = np.where(rng.uniform(size=len(truth)) < 0.3, rng.integers(0, classes, len(truth)), truth)
    probs[np.arange(len(truth)), shown] += right
    return truth, probs, np.arange(len(truth)) / 25.0


def test_the_hmm_recovers_noisy_segments_and_filters_causally():
    truth, probs, times = noisy_sequence()
    result = smooth(probs, np.ones(len(truth)) * 0.1, times, min_segment=0)  # the HMM alone, no merging
    raw = probs.argmax(axis=1)
    assert switches(raw) >= 10 * max(1, switches(result["offline"])), (switches(raw), switches(result["offline"]))
    assert (result["offline"] == truth).mean() > (raw == truth).mean() + 0.1
    edges = np.flatnonzero(np.diff(result["offline"])) + 1
    assert len(edges) == 2 and np.all(np.abs(edges - [100, 200]) <= 5), edges  # within 0.2 s at 25 fps
    changed = probs.copy()
    changed[150:] = changed[150:, ::-1]  # the future changes: the live answer up to then does not
    live = smooth(changed, np.ones(len(truth)) * 0.1, times)["filtered"]
    assert np.allclose(live[:150], result["filtered"][:150])
    assert not np.allclose(live[150:], result["filtered"][150:])


def test_flagged_frames_are_a_state_of_their_own_and_short_runs_merge():
    truth, probs, times = noisy_sequence(right=0.9)
    k = probs.shape[1]
    odds = np.full(len(truth), 0.3)  # the detector's odds: below its threshold (1) ...
    odds[140:160] = 9  # ... and 0.8 s past it, the model still sure of the class
    labels = smooth(probs, odds, times)["offline"]
    assert (labels[140:160] == truth[140:160]).all()  # a score a little past the threshold: not over a sure class
    odds[140:160] = 400  # far past it: the extra state, not forced into a class
    assert (smooth(probs, odds, times)["offline"][142:158] == k).all()
    assert (smooth(probs, odds, times, ood_weight=0)["offline"][140:160] == truth[140:160]).all()  # detector ignored
    unsure = probs.copy()
    unsure[140:160] = 1 / k
    odds[140:160] = 9  # a little past the threshold and unsure of the class: outside
    assert (smooth(unsure, odds, times)["offline"][142:158] == k).all()
    blank = np.zeros(len(truth), bool)
    blank[60:80] = True  # no picture: outside whatever the class probabilities and the detector say
    assert (smooth(probs, odds, times, blank=blank)["offline"][62:78] == k).all()
    merged = merge_short(np.r_[np.zeros(50, int), np.ones(5, int), np.zeros(50, int)], np.arange(105) / 25, 1.0, 0.04)
    assert (merged == 0).all()


def test_without_a_detector_an_unsure_model_is_never_outside():
    """No detector (odds 0): a frame is outside only when blank, however unsure the model (a 2-class model whose
    answers flicker between 0.6 and 0.4 stays in its classes), at any --ood_weight."""
    times = np.arange(100) / 25
    probs = np.where((np.arange(100) // 3 % 2 == 0)[:, None], [0.6, 0.4], [0.4, 0.6])
    for weight in (0, 0.5, 2):
        assert (smooth(probs, np.zeros(100), times, ood_weight=weight)["offline"] < 2).all()
    blank = np.zeros(100, bool)
    blank[40:60] = True
    assert (smooth(probs, np.zeros(100), times, blank=blank)["offline"][42:58] == 2).all()


def test_the_decoder_thread_stops_when_its_reader_does():
    """ahead(): items in order and the producer's error raised in the reader; when the reader stops early, the
    thread ends and the source is closed (its `finally` runs: a video file is closed)."""
    import threading
    import time

    from kvasir_mobileone.deploy.video import ahead

    closed = []

    def source():
        try:
            yield from range(100)
        finally:
            closed.append(True)

    assert list(ahead(iter(range(5)))) == [0, 1, 2, 3, 4]
    items = ahead(source())
    assert next(items) == 0
    items.close()  # the reader gives up (or raised) after one item
    for _ in range(50):
        if closed and not any(t.name == "video-decoder" for t in threading.enumerate()):
            break
        time.sleep(0.1)
    assert closed and not any(t.name == "video-decoder" for t in threading.enumerate())

    def broken():
        yield 1
        raise ValueError("damaged at frame 2")

    with pytest.raises(ValueError, match="damaged at frame 2"):
        list(ahead(broken()))


def test_every_nth_frame_and_a_frame_rate(examination, ood_run, tmp_path):
    every = main(
        ["predict", str(examination[0]), "--model", str(ood_run[1]), "--out", str(tmp_path / "a")] + ["--every", "5"]
    )[0]
    assert every["frames_classified"] == -(-every["frames_decoded"] // 5)
    fps = main(
        ["predict", str(examination[0]), "--model", str(ood_run[1]), "--out", str(tmp_path / "b")] + ["--fps", "2"]
    )[0]
    assert abs(fps["frames_classified"] - 2 * fps["duration"]) <= 2


def test_videos_that_cannot_be_read_are_said_in_words(examination, ood_run, tmp_path, capsys):
    bundle = str(ood_run[1])
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("this is a text file named .mp4")
    with pytest.raises(UserError, match="Not one of the 1 inputs could be classified"):
        main(["predict", str(not_video), "--model", bundle, "--out", str(tmp_path / "x")])
    printed = capsys.readouterr().out
    assert "notes.mp4: not a video that can be read" in printed and "Error" not in printed.split("UNREADABLE")[1]
    # a stream with no pictures: an audio-only MP4
    import av

    audio = tmp_path / "audio.mp4"
    with av.open(str(audio), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(UserError):
        main(["predict", str(audio), "--model", bundle, "--out", str(tmp_path / "y")])
    assert "audio.mp4: no video track in this file (it holds audio)" in capsys.readouterr().out
    # cut short: the frames before the cut are classified, and the result says where it stopped
    data = examination[0].read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    summary = main(["predict", str(cut), "--model", bundle, "--out", str(tmp_path / "z")])[0]
    assert 0 < summary["frames_classified"] < summary["duration"] * 25 - 25  # a second or more is missing
    assert summary["stopped"] and "truncated" in summary["stopped"] and "truncated" in capsys.readouterr().out
    assert len(read_csv(tmp_path / "z" / VIDEO_FRAMES_NAME)) == summary["frames_classified"]

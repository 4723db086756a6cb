"""`kvasir watch`: a synthetic examination streamed over UDP (MPEG-TS) to 127.0.0.1 at its own pace, classified as
it comes; a source that cannot be opened and a stream that stops each end with a message, never a hang."""

import json
import socket
import threading
import time

import pytest

from kvasir_mobileone.cli import main
from kvasir_mobileone.data.synth import KVASIR_CLASSES, synth_image
from kvasir_mobileone.data.synth_video import write_examination
from kvasir_mobileone.deploy.live import LIVE_STAY
from kvasir_mobileone.deploy.timeline import OUTSIDE_STATE
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import read_csv

CLASSES = tuple(KVASIR_CLASSES[:4])  # ood_runs' classes (conftest.py)
# the live label's lag behind a change (docs/deploy.md, Live examinations: benchmarks/live_lag.py at --stay 0.9 with
# one frame in three classified, median 0.40 s, max 0.84 s), with a margin for a slower machine that skips more
LAG_MEDIAN_S, LAG_MAX_S = 0.6, 1.5


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something has bound the UDP port (FFmpeg binds a unicast port without SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def send(video, url: str, port: int) -> None:
    """The video's packets, as they are (no re-encoding), in MPEG-TS over UDP at the pace of their own clock, once
    the receiver listens: UDP keeps nothing for a late listener, and the first key frame is the only one."""
    import av

    deadline = time.perf_counter() + 60
    while not listening(port) and time.perf_counter() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    source = av.open(str(video))
    stream = source.streams.video[0]
    out = av.open(url, mode="w", format="mpegts")
    target = out.add_stream_from_template(stream)
    start = time.perf_counter()
    for packet in source.demux(stream):
        if packet.dts is None:
            continue
        wait = start + float(packet.dts * stream.time_base) - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        packet.stream = target
        out.mux(packet)
    out.close()
    source.close()


@pytest.mark.budget(40)  # real time: the stream plays at its own pace, about 9 s, then a 2 s stall ends it
def test_watch_classifies_a_udp_stream_as_it_comes_and_ends_when_it_stops(ood_run, tmp_path, capsys):
    _, bundle = ood_run
    video, truth = write_examination(tmp_path / "exam.mp4", CLASSES, synth_image, 3, (192, 108), 25, 1.5, 0.6, 0.0)
    port = free_udp_port()
    url = f"udp://127.0.0.1:{port}"
    sender = threading.Thread(target=send, args=(video, url, port), daemon=True)
    sender.start()
    out = tmp_path / "watch"
    summary = main(["watch", url, "--model", str(bundle), "--out", str(out), "--stall_s", "2"])
    sender.join(timeout=30)
    printed = capsys.readouterr().out
    assert summary["stopped"].startswith("the stream stalled: no frame for 2 s"), summary
    assert "frames seen" in printed and "latency p50" in printed  # the summary line
    rows = read_csv(out / "frames.csv")
    assert len(rows) == summary["frames_classified"] > 100  # about 9 s at 25 fps
    assert summary["frames_seen"] == summary["frames_classified"] + summary["frames_skipped"]
    # counted twice, apart: the mailbox's frames replaced before the model took them, and decoded - classified
    assert sum(int(r["skipped_before"]) for r in rows) == summary["frames_skipped"]
    assert all(float(r["latency_ms"]) >= 0 for r in rows) and summary["latency_ms"]["p95"] > 0
    # the live answer follows the examination: most frames inside a class's stretch carry its label
    spans = [(r["label"], float(r["start"]), float(r["end"])) for r in read_csv(truth)]
    inside = [
        (r, next(s for s in spans if s[1] <= float(r["time"]) < s[2])) for r in rows if float(r["time"]) < spans[-1][2]
    ]
    labelled = [(r, s) for r, s in inside if s[0] in CLASSES and float(r["time"]) > s[1] + 0.5]  # past the lag
    assert labelled and sum(r["live"] == s[0] for r, s in labelled) / len(labelled) > 0.7
    segments = read_csv(out / "segments.csv")
    assert {s["class"] for s in segments} <= {*CLASSES, OUTSIDE_STATE} and len(segments) == summary["segments"]
    # each class's segment opens within the measured lag of the class's true start
    lags = []
    for label, start, end in spans:
        if label in CLASSES and start > 0:
            opened = [
                float(s["start"]) for s in segments if s["class"] == label and start - 0.05 <= float(s["start"]) < end
            ]
            assert opened and opened[0] - start <= LAG_MAX_S, (label, start, opened)
            lags.append(opened[0] - start)
    assert len(lags) == len(CLASSES) - 1 and sorted(lags)[len(lags) // 2] <= LAG_MEDIAN_S, lags
    assert json.loads((out / "summary.json").read_text())["frames_classified"] == summary["frames_classified"]
    assert summary["stay_per_second"] == LIVE_STAY == 0.9  # watch's own default, chosen from the measured lag
    assert any(line.split("  ")[1].startswith(CLASSES[0]) for line in printed.splitlines() if "  " in line)


def test_a_source_that_cannot_be_opened_says_so(ood_run, tmp_path):
    _, bundle = ood_run
    with pytest.raises(UserError, match="no such file, device or URL"):
        main(["watch", str(tmp_path / "missing.mp4"), "--model", str(bundle), "--out", str(tmp_path / "w")])
    start = time.perf_counter()
    silent = f"udp://127.0.0.1:{free_udp_port()}"
    with pytest.raises(UserError, match="cannot be opened"):
        main(["watch", silent, "--model", str(bundle), "--out", str(tmp_path / "w"), "--open_s", "1"])
    assert time.perf_counter() - start < 20  # a silent source ends with a message, not a hang


def test_a_frame_that_arrives_while_the_model_is_busy_replaces_the_waiting_one():
    """The mailbox keeps the newest frame: three arrive while the model works, it gets the last, two are skipped."""
    import numpy as np

    from kvasir_mobileone.deploy.live import Arrival, Newest

    mailbox = Newest()
    for k in range(3):
        mailbox.put(Arrival(k, k / 25, time.perf_counter(), np.zeros((4, 4, 3), np.uint8)))
    frame, skipped = mailbox.take(0.1)
    assert frame.index == 2 and skipped == 2 and mailbox.decoded == 3
    mailbox.end("the stream ended")
    assert mailbox.take(0.1)[0] is None and mailbox.ended == "the stream ended"


def test_the_live_label_is_filtered_one_odd_frame_does_not_flip_it():
    """The forward filter: a run of sure frames of one class, then one frame sure of another, keeps the first; a
    run of the other class moves it; a blank frame (no picture) is outside."""
    import numpy as np

    from kvasir_mobileone.deploy.live import LiveState

    state = LiveState(["a", "b", "c"], stay=0.99, ood_weight=0.5)
    sure_a, sure_b = np.array([0.9, 0.05, 0.05]), np.array([0.05, 0.9, 0.05])
    for k in range(25):
        assert state.update(sure_a, 0.0, False, k / 25)[0] == 0
    assert state.update(sure_b, 0.0, False, 1.0)[0] == 0  # one odd frame
    labels = [state.update(sure_b, 0.0, False, 1.0 + k / 25)[0] for k in range(1, 26)]
    assert labels[-1] == 1
    blanks = [state.update(sure_b, 0.0, True, 2.0 + k / 25)[0] for k in range(1, 26)]
    assert state.label(blanks[-1]) == OUTSIDE_STATE


def test_the_live_tab_answers_camera_frames_as_they_come(ood_run, tmp_path):
    """The page's Live tab (deploy/serve.LiveSession, what each camera frame goes through): a synthetic
    examination's frames arriving every 0.1 s, two in a row now and then lost while the model was busy; the live
    answer follows the truth, the lost frames are counted, the answer is drawn over the picture."""
    from types import SimpleNamespace

    import av

    from kvasir_mobileone.deploy.runtime import load
    from kvasir_mobileone.deploy.serve import LIVE_EVERY_S, LIVE_RESTART_S, Handlers

    _, bundle = ood_run
    video, truth = write_examination(tmp_path / "exam.mp4", CLASSES, synth_image, 5, (320, 240), 10, 2.0, 0.6, 0.0)
    handlers = Handlers(SimpleNamespace(predictor=load(str(bundle))), 10**7, 10**7)
    spans = [(r["label"], float(r["start"]), float(r["end"])) for r in read_csv(truth)]
    with av.open(str(video)) as container:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    shown, answer, figures, session = handlers.live(frames[0][1], None)
    lost, seen = 0, []
    for k, (t, pixels) in enumerate(frames[1:], start=1):
        if k % 10 in (4, 5):  # two frames lost while the model was busy: the next arrives 0.3 s after the last
            lost += 1
            continue
        shown, answer, figures = session.step(pixels, session.started + t)
        seen.append((t, answer))
    assert session.skipped == lost and session.answered == len(frames) - lost
    assert f"{session.answered} frames answered" in figures and f"about {lost} skipped" in figures
    assert shown.shape[1] <= 640 and shown[2:20, 300:].mean() < 20  # the black band along the top, the text left
    past_lag = [(a, s[0]) for t, a in seen for s in spans if s[1] + 0.5 <= t < s[2] and s[0] in CLASSES]
    assert past_lag and sum(a.startswith(f"Live: **{label}**") for a, label in past_lag) > 0.7 * len(past_lag)
    # a camera silent for longer than LIVE_RESTART_S starts a new examination: a fresh filter, counts from zero
    session.last = time.perf_counter() - LIVE_RESTART_S - 1
    *_, again = handlers.live(frames[0][1], session)
    assert again is not session and again.answered == 1 and again.skipped == 0
    assert LIVE_EVERY_S == 0.1


@pytest.mark.budget(25)  # real time: the file plays at its own pace, about 4 s
def test_watch_sends_the_frames_on_with_the_live_answer_drawn_over_them(ood_run, tmp_path):
    """--annotate_to: each classified frame, 360 px high, with the live answer's band in its state's colour, at the
    frames' own times; a destination it cannot write says so before anything is watched."""
    import av
    import numpy as np

    from kvasir_mobileone.deploy.annotate import MIN_HEIGHT as DISPLAY_HEIGHT
    from kvasir_mobileone.deploy.examination import band_colours

    _, bundle = ood_run
    video, _ = write_examination(tmp_path / "exam.mp4", CLASSES, synth_image, 2, (320, 240), 25, 0.6, 0.6, 0.0)
    out, shown = tmp_path / "watch", tmp_path / "shown" / "annotated.mp4"
    summary = main(["watch", str(video), "--model", str(bundle), "--out", str(out), "--annotate_to", str(shown)])
    assert summary["stopped"] == "the stream ended"  # a file played to its end
    sent = summary["annotated"]
    assert sent["to"] == str(shown) and sent["error"] is None and sent["frames"] > 50 and sent["not_sent"] == 0
    assert sent["frames"] + sent["skipped"] == summary["frames_classified"]
    rows = {f"{float(r['time']):.2f}": r for r in read_csv(out / "frames.csv")}
    colours = band_colours(list(CLASSES))
    with av.open(str(shown)) as container:
        frames = [(float(f.time), f.to_ndarray(format="rgb24")) for f in container.decode(video=0)]
    assert len(frames) == sent["frames"] and frames[0][1].shape == (DISPLAY_HEIGHT, 480, 3)  # 4:3, 360 high
    times = [t for t, _ in frames]
    assert times == sorted(times) and all(f"{t:.2f}" in rows for t in times)  # classified frames, their own times
    checked = 0
    for t, pixels in frames[::5]:
        live = rows[f"{t:.2f}"]["live"]
        state = CLASSES.index(live) if live in CLASSES else len(CLASSES)
        line = pixels[DISPLAY_HEIGHT // 20 + DISPLAY_HEIGHT // 30 + 11, 100:400].mean(axis=0)  # the band's colour line
        assert np.abs(line - colours[state]).max() < 40, (t, live, line)
        checked += 1
    assert checked >= 10
    assert not list(shown.parent.glob(".*partial"))  # the file renamed into place, nothing left beside it
    watching = ["watch", str(video), "--model", str(bundle), "--out", str(out)]
    with pytest.raises(UserError, match=r"--annotate_to .*\.avi: a stream .* or a \.ts, \.mp4 or \.mkv file"):
        main([*watching, "--annotate_to", str(tmp_path / "x.avi")])
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(UserError, match=r"--annotate_to .*a_file/x\.mp4: cannot be written"):  # said before watching
        main([*watching, "--annotate_to", str(tmp_path / "a_file" / "x.mp4")])
    # nothing to send (no frame classified within --seconds 0): no file, nothing left beside it
    empty = main([*watching, "--annotate_to", str(tmp_path / "empty" / "none.mp4"), "--seconds", "0"])
    assert empty["annotated"]["frames"] == 0 and not list((tmp_path / "empty").iterdir())


def test_the_lag_of_a_change_is_the_time_to_the_first_frame_that_carries_it():
    """evaluation/examination.follow_lags (what benchmarks/live_lag.py measures): every true change after the first,
    the time from its start to the first frame inside it with its label; None when no frame inside it has it."""
    import numpy as np

    from kvasir_mobileone.evaluation.examination import follow_lags

    truth = [
        {"label": "a", "start": "0", "end": "1"},
        {"label": OUTSIDE_STATE, "start": "1", "end": "1.5"},
        {"label": "b", "start": "1.5", "end": "3"},
        {"label": "c", "start": "3", "end": "4"},
    ]
    times = np.arange(0, 4, 0.1)
    labels = np.array(["a"] * 11 + [OUTSIDE_STATE] * 6 + ["a"] * 2 + ["b"] * 11 + ["b"] * 10, dtype=object)
    lags = follow_lags(labels, times, truth)
    assert [x["label"] for x in lags] == [OUTSIDE_STATE, "b", "c"]
    assert lags[0]["lag"] == pytest.approx(0.1) and lags[1]["lag"] == pytest.approx(0.4) and lags[2]["lag"] is None
    assert [x["duration"] for x in lags] == pytest.approx([0.5, 1.5, 1.0])


@pytest.mark.budget(30)  # real time: a file played at its own pace until Ctrl-C
def test_ctrl_c_ends_the_watch_cleanly_with_its_summary(ood_run, tmp_path):
    """SIGINT (Ctrl-C) to a running `kvasir watch`: exit status 0, the summary printed and written, segments.csv
    whole, frames.csv holding every classified frame."""
    import signal
    import subprocess
    import sys

    _, bundle = ood_run
    video, _ = write_examination(tmp_path / "exam.mp4", CLASSES, synth_image, 1, (192, 108), 25, 1.0, 0.6, 0.0)
    out = tmp_path / "watch"
    process = subprocess.Popen(
        [sys.executable, "-m", "kvasir_mobileone.cli", "watch", str(video), "--model", str(bundle), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.perf_counter() + 60
    while time.perf_counter() < deadline and process.poll() is None:
        frames = out / "frames.csv"
        if frames.is_file() and frames.read_text().count("\n") > 30:  # watching: over a second of frames answered
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    printed, _ = process.communicate(timeout=30)
    assert process.returncode == 0, printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stopped"] == "stopped with Ctrl-C" and f"{video}: stopped with Ctrl-C." in printed
    assert 30 <= summary["frames_classified"] == len(read_csv(out / "frames.csv"))
    segments = read_csv(out / "segments.csv")
    assert len(segments) == summary["segments"] >= 1
    assert sum(int(s["frames"]) for s in segments) == summary["frames_classified"]


def test_times_count_from_the_first_frame_whatever_the_source_clock(ood_run, tmp_path):
    """A source whose clock starts at 50 s (a capture card's may be the machine's uptime): frames.csv, the segments
    and the printed answers count from its first frame."""
    import av

    _, bundle = ood_run
    video, _ = write_examination(tmp_path / "exam.mp4", CLASSES, synth_image, 4, (192, 108), 25, 0.5, 0.2, 0.0)
    late = tmp_path / "late.ts"
    with av.open(str(video)) as source, av.open(str(late), mode="w", format="mpegts") as out:
        stream = source.streams.video[0]
        target = out.add_stream_from_template(stream)
        shift = int(50 / stream.time_base)
        for packet in source.demux(stream):
            if packet.dts is None:
                continue
            packet.pts, packet.dts, packet.stream = packet.pts + shift, packet.dts + shift, target
            out.mux(packet)
    with av.open(str(late)) as check:
        assert float(next(check.decode(video=0)).time) > 49  # the file's own clock does start late
    summary = main(["watch", str(late), "--model", str(bundle), "--out", str(tmp_path / "w")])
    times = [float(r["time"]) for r in read_csv(tmp_path / "w" / "frames.csv")]
    assert times[0] < 0.2 and max(times) < 3.0 and times == sorted(times), times[:3]
    assert float(read_csv(tmp_path / "w" / "segments.csv")[0]["start"]) < 0.2 and summary["frames_classified"] > 20

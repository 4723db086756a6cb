"""A live examination (`kvasir watch`): frames from a capture device (V4L2 /dev/videoN: a capture card is one), a
network stream (udp://, rtsp://, srt://: what FFmpeg opens) or a file played at its own pace (a rehearsal), each
classified as it comes. A reader thread decodes and keeps only the newest frame: a frame that arrives while the model
is busy replaces the one waiting and is counted as skipped, never queued, so the delay cannot grow. The answer is
smoothed causally — the timeline's forward filter over the classes and the outside state, with the no-picture rule
(Viterbi needs the future) —, each classified frame's latency (arrival to answer) is logged, frames.csv grows a row
per frame and segments.csv is rewritten whole each time a segment closes, so that a crash loses at most the open
one. The stream's end, a stall (no frame for `stall_s`) and Ctrl-C end it with a summary."""

from __future__ import annotations

import contextlib
import csv
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kvasir_mobileone.deploy.annotate import MIN_HEIGHT, draw_band, scaled_size
from kvasir_mobileone.deploy.examination import band_colours, write_segments
from kvasir_mobileone.deploy.predict import classify
from kvasir_mobileone.deploy.timeline import OOD_WEIGHT, OUTSIDE_STATE, emissions, transitions
from kvasir_mobileone.deploy.video import INTERPOLATION, VideoError, clock
from kvasir_mobileone.extras import require
from kvasir_mobileone.io import write_json
from kvasir_mobileone.runs import VIDEO_FRAMES_NAME, VIDEO_SEGMENTS_NAME, VIDEO_SUMMARY_NAME

LIVE_STAY = 0.9  # watch's default --stay (per second): benchmarks/live_lag.py chose it (docs/deploy.md)
OPEN_S = 10.0  # a source that sends nothing within this many seconds "cannot be opened"
STALL_S = 5.0  # a stream that sends no frame for this many seconds has stalled: the watch ends
LIVE_FRAME_COLUMNS = [
    "frame",
    "time",
    "latency_ms",
    "top1",
    "p1",
    "live",
    "live_p",
    "outside",
    "no_picture",
    "skipped_before",
]


@dataclass
class Arrival:
    """A decoded frame at the model's size, and when it arrived."""

    index: int
    time: float  # the stream's own clock, seconds
    arrived: float  # time.perf_counter() when the reader had it decoded, before scaling
    pixels: np.ndarray  # H x W x 3 uint8 at the model input's size
    display: np.ndarray | None = None  # H x W x 3 uint8 at the annotated output's size, when one is written


class Newest:
    """A one-frame mailbox: put() replaces a frame nobody took yet (counted as skipped); take() waits for one. The
    reader's frames wait here for the model, and the answered frames for the annotated output's encoder."""

    def __init__(self):
        self.condition = threading.Condition()
        self.frame = None
        self.skipped = 0
        self.decoded = 0
        self.ended: str | None = None  # why the reader stopped, once it has
        self.interrupted = False  # Ctrl-C: take() returns at once, frame or not

    def put(self, frame) -> None:
        with self.condition:
            self.decoded += 1
            if self.frame is not None:
                self.skipped += 1
            self.frame = frame
            self.condition.notify()

    def end(self, why: str) -> None:
        with self.condition:
            self.ended = why
            self.condition.notify()

    def interrupt(self) -> None:
        """Ctrl-C's signal handler (the main thread; the condition's lock is re-entrant): wake take()."""
        with self.condition:
            self.interrupted = True
            self.condition.notify()

    def take(self, timeout: float) -> tuple:
        """(the newest frame, frames skipped so far), or (None, ...) when the reader ended or nothing came."""
        with self.condition:
            self.condition.wait_for(
                lambda: self.frame is not None or self.ended is not None or self.interrupted, timeout
            )
            frame, self.frame = self.frame, None
            return frame, self.skipped


def open_source(source: str, stall_s: float, open_s: float = OPEN_S):
    """(container, video stream, whether to pace it): a V4L2 device, a network URL, or a file played in real time."""
    av = require("av", "video")
    options, pace, kind = {}, False, "stream"
    if source.startswith("/dev/video"):
        kind = "device"
        fmt = "v4l2"
    elif "://" in source:
        fmt = None
        options = {"analyzeduration": "1000000"}  # a second of the stream to learn its format, not five
        if source.startswith("udp://"):
            options |= {"overrun_nonfatal": "1", "fifo_size": "1000000"}
    else:
        if not Path(source).is_file():
            raise VideoError(f"{source}: no such file, device or URL (udp://, rtsp://, srt://, /dev/videoN).")
        fmt, pace, kind = None, True, "file"
    try:
        container = av.open(source, format=fmt, options=options, timeout=(open_s, stall_s))
    except (av.error.FFmpegError, OSError) as err:
        raise VideoError(
            f"{source}: the {kind} cannot be opened ({getattr(err, 'strerror', None) or err}). Is it sending, and "
            "is the address right? A capture card shows up as /dev/videoN; a stream as udp://HOST:PORT, "
            "rtsp://..., srt://..."
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoError(f"{source}: no video in this {kind}.")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream, pace


def read_frames(
    container, stream, pace: bool, size: int, interpolation: str, mailbox: Newest, stop, display: bool = False
) -> None:
    """The reader thread: every frame decoded, scaled to the model's size (and with `display`, to the annotated
    output's) and put in the mailbox (a file at the pace of its own clock); the reason it stopped goes to the
    mailbox last."""
    require("av", "video")
    from av.video.reformatter import VideoReformatter

    scaler, flag = VideoReformatter(), INTERPOLATION.get(interpolation, "BILINEAR")
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    shown_w, shown_h = scaled_size(stream.codec_context.width or 16, stream.codec_context.height or 9, MIN_HEIGHT)
    start, first, last, why = None, None, None, "the stream ended"
    try:
        for index, frame in enumerate(container.decode(stream)):
            if stop.is_set():
                why = "stopped"
                break
            raw = float(frame.time) if frame.time is not None else index / rate
            first = raw if first is None else first
            t = raw - first  # seconds since the first frame: a capture card's clock may be the machine's uptime
            if last is not None and t <= last:  # a clock that jumps back (a sender restarted, a wrap): one frame on
                first, t = raw - (last + 1 / rate), last + 1 / rate
            last = t
            if pace:
                start = time.perf_counter() - t if start is None else start
                wait = start + t - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            arrived = time.perf_counter()  # decoded: its latency counts the scaling, the model and the smoothing
            pixels = scaler.reformat(frame, size, size, "rgb24", interpolation=flag).to_ndarray()
            shown = frame.to_ndarray(format="rgb24", width=shown_w, height=shown_h) if display else None
            mailbox.put(Arrival(index, t, arrived, pixels, shown))
    except Exception as err:  # FFmpeg, the OS, a frame the scaler refuses: said, never a silent end
        why = f"the stream broke off ({getattr(err, 'strerror', None) or err})"
    finally:
        container.close()
        mailbox.end(why)


@dataclass
class LiveState:
    """The forward filter's belief over the classes and the outside state, and the open segment."""

    names: list[str]
    stay: float
    ood_weight: float
    belief: np.ndarray | None = None
    last_time: float | None = None
    segments: list[dict] = field(default_factory=list)
    open: dict | None = None

    def update(self, probs: np.ndarray, odds: float, blank: bool, t: float) -> tuple[int, float]:
        """One frame's (live state, its filtered probability)."""
        e = emissions(probs[None], np.array([odds]), np.array([blank]), self.ood_weight)[0]
        states = len(e)
        if self.belief is None:
            self.belief = np.full(states, 1 / states)
        dt = max(t - self.last_time, 1e-3) if self.last_time is not None else 1 / 25
        self.belief = (self.belief @ transitions(states, self.stay, 1 / dt)) * e
        self.belief /= self.belief.sum()
        self.last_time = t
        state = int(self.belief.argmax())
        return state, float(self.belief[state])

    def label(self, state: int) -> str:
        return self.names[state] if state < len(self.names) else OUTSIDE_STATE

    def follow(self, state: int, t: float, p: float) -> dict | None:
        """Extend the open segment, or close it and open another: the closed one, when one closed."""
        if self.open is not None and self.open["state"] == state:
            self.open.update(end=t, frames=self.open["frames"] + 1, p_sum=self.open["p_sum"] + p)
            return None
        closed = self.close()
        self.open = {"state": state, "start": t, "end": t, "frames": 1, "p_sum": p}
        return closed

    def close(self) -> dict | None:
        if self.open is None:
            return None
        o, self.open = self.open, None
        row = {  # the row of deploy/examination.write_segments: one segments.csv for a video and a live feed
            "state": self.label(o["state"]),
            "start": o["start"],
            "end": o["end"],
            "duration": o["end"] - o["start"],
            "frames": o["frames"],
            "mean_probability": round(o["p_sum"] / o["frames"], 4),
        }
        self.segments.append(row)
        return row


@dataclass
class FrameAnswer:
    """One live frame's answer: its class probabilities and judgement, and the live (filtered) state."""

    probs: np.ndarray  # the frame's class probabilities
    judged: object  # deploy/predict.Prediction: the frame's own answer, flags and scores
    live: int  # the forward filter's state (a class, or the outside state)
    live_p: float  # its filtered probability
    label: str  # the state's name
    own: str  # the frame's own answer in words: "no picture", or its top class and probability

    @property
    def top(self) -> int:
        return int(self.probs.argmax())


class LiveFeed:
    """The model side of a live examination, shared by `kvasir watch` and the page's Live tab: a frame at the model's
    input size classified as `predict` does, its odds of being outside the training data from the detector, and the
    forward filter (LiveState) moved on to the frame's time."""

    def __init__(self, predictor, stay: float = LIVE_STAY, ood_weight: float = OOD_WEIGHT):
        self.predictor = predictor
        self.state = LiveState(list(predictor.class_names), stay, ood_weight)
        self.uncertainty = getattr(predictor, "uncertainty", None)

    def answer(self, pixels: np.ndarray, t: float, name: str = "frame") -> FrameAnswer:
        """`pixels`: H x W x 3 uint8 at the model input's size; `t`: the frame's time in seconds."""
        model_input = self.predictor.model_input
        probs, judged = classify(self.predictor, model_input.from_resized(pixels)[None], [name], 1)
        j = judged[0]
        odds = 0.0
        if self.uncertainty is not None and (j.ood_score is not None or j.input_score is not None):
            score = None if j.ood_score is None else [j.ood_score]
            checked = None if j.input_score is None else [j.input_score]
            odds = float(self.uncertainty.outside_odds(score, 1, checked)[0])
        live, live_p = self.state.update(probs[0], odds, j.no_picture is True, t)
        top = int(probs[0].argmax())
        own = "no picture" if j.no_picture else f"{self.state.names[top]} {probs[0, top]:.2f}"
        return FrameAnswer(probs[0], j, live, live_p, self.state.label(live), own)


class AnnotatedOutput:
    """`watch --annotate_to DEST`: each classified frame with the live answer drawn over it (the annotated video's
    band), 360 px high, sent on as H.264 at the frames' times — to a stream (udp://, srt://: MPEG-TS; a player such
    as ffplay or VLC shows it) or a file (.ts, .mp4, .mkv: written beside its name and renamed into place once
    closed without an error, else removed). An encoder thread with a one-frame mailbox of its own: the model never
    waits for it; the frames that arrived while it was busy are counted as skipped, those after an error as not
    sent."""

    def __init__(self, dest: str, size: tuple[int, int], colours: list[tuple]):
        from fractions import Fraction

        self.av = require("av", "video")
        self.dest, self.size, self.colours = dest, size, colours
        self.target = None if "://" in dest else Path(dest)
        self.file = None
        if self.target is None:
            fmt, where = "mpegts", dest
        else:
            fmt = {".ts": "mpegts", ".mp4": "mp4", ".mkv": "matroska"}.get(self.target.suffix)
            if fmt is None:
                raise VideoError(f"--annotate_to {dest}: a stream (udp://, srt://) or a .ts, .mp4 or .mkv file.")
            self.partial = self.target.with_name(f".{self.target.name}.partial")
            try:  # opened here: PyAV would open it only at the first frame, too late to say so before watching
                self.target.parent.mkdir(parents=True, exist_ok=True)
                self.file = where = open(self.partial, "wb")  # noqa: SIM115 (closed in close())
            except OSError as err:
                raise VideoError(f"--annotate_to {dest}: cannot be written ({err.strerror or err}).") from err
        try:
            self.container = self.av.open(where, mode="w", format=fmt)
        except (self.av.error.FFmpegError, OSError) as err:
            self.discard()
            raise VideoError(f"--annotate_to {dest}: cannot be opened for writing ({err}).") from err
        self.stream = self.container.add_stream("libx264", rate=25)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
        self.stream.codec_context.time_base = self.time_base = Fraction(1, 1000)  # the frames' times, in ms
        self.mailbox, self.written, self.last_pts = Newest(), 0, -1
        self.error: str | None = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def put(self, frame: Arrival, answer: FrameAnswer, latency: float) -> None:
        self.mailbox.put((frame.time, frame.display, answer, f"frame: {answer.own}  {1000 * latency:.0f} ms"))

    def run(self) -> None:
        while True:
            item, _ = self.mailbox.take(1.0)
            if item is None:
                if self.mailbox.ended is not None:
                    return
                continue
            t, pixels, answer, caption = item
            try:
                picture = draw_band(pixels, f"{clock(t)}  {answer.label}", caption, self.colours[answer.live])
                frame = self.av.VideoFrame.from_ndarray(picture, format="rgb24")
                pts = max(int(round(t * 1000)), self.last_pts + 1)
                frame.pts, frame.time_base, self.last_pts = pts, self.time_base, pts
                for packet in self.stream.encode(frame):
                    self.container.mux(packet)
            except Exception as err:  # a receiver gone, a disk full, anything: said in the summary, never fatal
                self.error = str(err) or type(err).__name__
                return
            self.written += 1

    def discard(self) -> None:
        if self.file is not None:
            self.file.close()
            self.partial.unlink(missing_ok=True)

    def close(self) -> dict:
        """Flush and close: a file renamed into place when whole, removed otherwise; what was sent."""
        self.mailbox.end("closed")
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # blocked on a stream that takes nothing: never flushed beside it
            self.error = self.error or "the encoder did not finish within 30 s"
        else:
            try:
                if self.error is None:
                    for packet in self.stream.encode():
                        self.container.mux(packet)
                self.container.close()
            except Exception as err:
                self.error = self.error or str(err) or type(err).__name__
        if self.file is not None:
            if self.error is None and self.written:
                self.file.close()
                self.partial.replace(self.target)
            else:
                self.discard()
        return {
            "to": self.dest,
            "frames": self.written,
            "skipped": self.mailbox.skipped,  # arrived while the encoder was busy
            "not_sent": self.mailbox.decoded - self.written - self.mailbox.skipped,  # after an error
            "error": self.error,
        }


CTRL_C = "stopped with Ctrl-C"


@contextlib.contextmanager
def ctrl_c_ends(mailbox: Newest, on: bool):
    """With `on` (the command), Ctrl-C (SIGINT) ends the watch between two frames, never inside one (a frame's row,
    its segment and its count always go together); a second Ctrl-C is Python's KeyboardInterrupt at once. Off (a
    benchmark) or outside the main thread, where no handler can be set, Ctrl-C stays KeyboardInterrupt."""

    def interrupt(*_):
        if mailbox.interrupted:
            raise KeyboardInterrupt
        mailbox.interrupt()

    try:
        previous = signal.signal(signal.SIGINT, interrupt) if on else None
    except ValueError:  # not the main thread
        previous = None
    if previous is None:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def watch(
    predictor,
    source: str,
    out_dir: Path,
    stay: float = LIVE_STAY,
    ood_weight: float = OOD_WEIGHT,
    seconds: float | None = None,
    stall_s: float = STALL_S,
    on_answer: Callable[[str], None] = lambda line: None,
    open_s: float = OPEN_S,
    annotate_to: str | None = None,
    ctrl_c: bool = False,
) -> dict:
    """Watch `source` until it ends, stalls, `seconds` pass or (with `ctrl_c`, as the command does) Ctrl-C; the
    summary (also summary.json). Without `ctrl_c` Ctrl-C is KeyboardInterrupt, after the files are closed."""
    names = list(predictor.class_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    container, stream, pace = open_source(source, stall_s, open_s)
    annotated = None
    if annotate_to:
        try:
            size = scaled_size(stream.codec_context.width or 16, stream.codec_context.height or 9, MIN_HEIGHT)
            annotated = AnnotatedOutput(annotate_to, size, band_colours(names))
        except BaseException:
            container.close()
            raise
    mailbox, stop = Newest(), threading.Event()
    model_input = predictor.model_input
    reader = threading.Thread(
        target=read_frames,
        args=(
            container,
            stream,
            pace,
            model_input.image_size,
            model_input.interpolation,
            mailbox,
            stop,
            bool(annotated),
        ),
        daemon=True,
    )
    feed = LiveFeed(predictor, stay, ood_weight)
    state = feed.state
    latencies, classified, why = [], 0, None
    started = time.perf_counter()
    frames_path = out_dir / VIDEO_FRAMES_NAME
    try:
        log = open(frames_path, "w", newline="", encoding="utf-8")  # noqa: SIM115 (grown row by row, closed below)
    except OSError:
        container.close()
        if annotated is not None:
            annotated.close()
        raise
    reader.start()
    with log, ctrl_c_ends(mailbox, ctrl_c):
        rows = csv.writer(log)
        rows.writerow(LIVE_FRAME_COLUMNS)
        last_label, skipped_seen = None, 0
        try:
            while True:
                if seconds is not None and time.perf_counter() - started > seconds:
                    why = f"--seconds {seconds:g} reached"
                    break
                frame, skipped = mailbox.take(stall_s)
                if mailbox.interrupted:  # a frame taken now is left: skipped, as one that came too late
                    why = CTRL_C
                    break
                if frame is None:
                    why = mailbox.ended or f"the stream stalled: no frame for {stall_s:g} s (--stall_s)"
                    break
                a = feed.answer(frame.pixels, frame.time, source)
                latency = time.perf_counter() - frame.arrived
                latencies.append(latency)
                classified += 1
                j = a.judged
                rows.writerow(
                    [
                        frame.index,
                        f"{frame.time:.3f}",
                        f"{1000 * latency:.1f}",
                        names[a.top],
                        f"{a.probs[a.top]:.4f}",
                        a.label,
                        f"{a.live_p:.4f}",
                        j.outside is True and not j.no_picture,
                        j.no_picture is True,
                        skipped - skipped_seen,
                    ]
                )
                skipped_seen = skipped
                log.flush()
                if annotated is not None:
                    annotated.put(frame, a, latency)
                closed = state.follow(a.live, frame.time, a.live_p)
                if closed is not None:
                    write_segments(out_dir / VIDEO_SEGMENTS_NAME, state.segments)
                if a.label != last_label:
                    last_label = a.label
                    on_answer(f"{clock(frame.time, tenths=True)}  {a.label} ({a.live_p:.2f})  {1000 * latency:.0f} ms")
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the main thread
            if not ctrl_c:
                raise
            why = CTRL_C
        finally:
            stop.set()
            written = annotated.close() if annotated is not None else None  # on any way out: the file whole
    state.close()
    write_segments(out_dir / VIDEO_SEGMENTS_NAME, state.segments)
    reader.join(timeout=stall_s + 1)
    ms = 1000 * np.array(latencies) if latencies else np.zeros(0)
    summary = {
        "source": source,
        "stopped": why,
        "frames_seen": mailbox.decoded,
        "frames_classified": classified,
        "frames_skipped": mailbox.decoded - classified,
        "latency_ms": {
            "p50": float(np.percentile(ms, 50)) if len(ms) else None,
            "p95": float(np.percentile(ms, 95)) if len(ms) else None,
            "max": float(ms.max()) if len(ms) else None,
        },
        "segments": len(state.segments),
        "seconds": time.perf_counter() - started,
        "stay_per_second": stay,
        "ood_weight": ood_weight,
        "annotated": written,
    }
    write_json(out_dir / VIDEO_SUMMARY_NAME, summary)
    return summary

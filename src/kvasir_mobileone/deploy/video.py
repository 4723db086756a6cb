"""Reading an examination video for `kvasir predict`: PyAV decodes with its threads on, FFmpeg's scaler brings every
frame to the network's input size (never a full-size frame resized in Python), and the model input does the rest
(hidden pixels black, mean/std). A file that is not a video, a stream without pictures and a video cut short each
get a sentence, and what was read before a break is kept and said."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from queue import Full, Queue
from threading import Event, Thread

import numpy as np

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.extras import require
from kvasir_mobileone.images import ModelInput

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".ts")
INTERPOLATION = {"bilinear": "BILINEAR", "bicubic": "BICUBIC", "nearest": "POINT"}  # ModelInput's, as swscale's


class VideoError(UserError):
    """Not a video, no video track, or nothing decodable in it."""


def model_threads() -> int:
    """onnxruntime's threads while a video decodes beside it: half the cores (on 2 cores one thread each was
    fastest, `kvasir benchmark`'s video rows: the two no longer fight over the same cores)."""
    return max(1, (os.cpu_count() or 2) // 2)


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def clock(seconds: float, tenths: bool = False) -> str:
    """mm:ss (h:mm:ss past an hour), as the timeline and the segments table write time; mm:ss.s with tenths."""
    if tenths:
        t = round(seconds, 1)
        whole = clock(t - t % 60)[:-2]  # the minutes (and hours) part, "mm:"
        return f"{whole}{t % 60:04.1f}"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


@dataclass
class VideoInfo:
    """What the file says and what was read: fps, duration, frames decoded and kept, and where reading stopped
    early (None when it read to the end)."""

    path: str
    fps: float
    duration: float | None
    width: int
    height: int
    codec: str
    decoded: int = 0
    kept: int = 0
    last_time: float | None = None  # of the last frame decoded
    stopped: str | None = None


def open_video(path: str | Path):
    """(container, video stream) or a VideoError in words."""
    av = require("av", "video")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as err:
        if "moov atom not found" in str(err):
            raise VideoError(
                f"{path}: the video's index (the MP4 'moov' box) is missing: the file was cut short before it was "
                "written to the end (an interrupted copy or recording?). Copy it again, or repair it (e.g. untrunc)."
            ) from err
        raise VideoError(
            f"{path}: not a video that can be read (FFmpeg finds no known container in it: {err.strerror or err})."
            " Is it a video file, and complete?"
        ) from err
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no stream at all"
        container.close()
        raise VideoError(f"{path}: no video track in this file (it holds {kinds}).")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # frame and slice threads: decoding uses every core
    return container, stream


def frames(
    path: str | Path, model_input: ModelInput, every: int = 1, fps: float | None = None, batch_size: int = 32
) -> tuple[VideoInfo, Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]]:
    """(info, batches of (frame indices, times in seconds, network inputs N x 3 x S x S)). `every`
    keeps one frame in N; `fps` keeps frames at about that rate instead. A decoding error ends the batches early:
    info.stopped says where and why, and the frames before it are kept. Decoding runs in a thread of its own, a
    few batches ahead, so that the model classifies one batch while the next is decoded (PyAV lets go of the GIL
    while FFmpeg works)."""
    av = require("av", "video")
    from av.video.reformatter import VideoReformatter

    container, stream = open_video(path)
    rate = float(stream.average_rate or stream.guessed_rate or 25)
    duration = duration_of(container, stream)
    info = VideoInfo(
        str(path), rate, duration, stream.codec_context.width, stream.codec_context.height, stream.codec_context.name
    )
    size, flag = model_input.image_size, INTERPOLATION.get(model_input.interpolation, "BILINEAR")
    step = 1 / fps if fps else None

    scaler = VideoReformatter()  # one scaling context for every frame (a new one per frame costs a third)

    def batches():
        indices, times, inputs = [], [], []
        next_time = 0.0
        try:
            for frame in container.decode(stream):
                index = info.decoded
                info.decoded += 1
                t = float(frame.time) if frame.time is not None else index / rate
                info.last_time = t
                if step is not None:
                    if t + 1e-9 < next_time:
                        continue
                    next_time += step * max(1, int((t - next_time) // step) + 1)
                elif index % every:
                    continue
                pixels = scaler.reformat(frame, size, size, "rgb24", interpolation=flag).to_ndarray()
                indices.append(index)
                times.append(t)
                inputs.append(model_input.from_resized(pixels))
                info.kept += 1
                if len(inputs) == batch_size:
                    yield np.array(indices), np.array(times), np.stack(inputs)
                    indices, times, inputs = [], [], []
        except (av.error.FFmpegError, ValueError) as err:
            where = clock(info.last_time) if info.last_time is not None else "the start"
            info.stopped = (
                f"the video could not be decoded past {where} (frame {info.decoded}): it is truncated or damaged "
                f"({getattr(err, 'strerror', None) or err}); the {info.kept} frames before it are classified"
            )
        finally:
            container.close()
        last = info.last_time or 0.0
        if info.stopped is None and duration and info.decoded and last < duration - 3 / rate:
            info.stopped = (
                f"the video ends at {clock(last)} although it says it lasts {clock(duration)}: it is truncated "
                f"(frame {info.decoded} was the last that could be decoded); the frames before it are classified"
            )
        if inputs:
            yield np.array(indices), np.array(times), np.stack(inputs)
        if info.decoded == 0 and info.stopped is None:
            info.stopped = "no frame could be decoded: the video track is empty or damaged"

    return info, ahead(batches())


def duration_of(container, stream) -> float | None:
    """Seconds the video says it lasts: its stream's duration, else the container's (MKV and WebM often give only
    that); None when neither says."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    return container.duration / 1_000_000 if container.duration else None


def ahead(items: Iterator, depth: int = 3) -> Iterator:
    """The items of `items`, produced in a thread up to `depth` ahead; its error is raised here, in order. When the
    consumer stops early (it raises, or closes this generator), the thread stops too and closes `items` (so a
    decoder's `finally` runs: the video file is closed)."""
    queue: Queue = Queue(maxsize=depth)
    done, stop = object(), Event()

    def put(item) -> bool:  # False once the consumer has gone
        while not stop.is_set():
            try:
                queue.put(item, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as err:  # handed to the consumer, which raises it
            put(err)
            return
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()
        put(done)

    thread = Thread(target=produce, daemon=True, name="video-decoder")
    thread.start()
    try:
        while (item := queue.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)

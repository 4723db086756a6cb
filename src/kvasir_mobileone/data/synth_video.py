"""Synthetic examinations (`kvasir synth --video true`): an MP4 whose segments are the synthetic classes in a
scripted order, with camera motion (cross-fades between views of the class), a blurred stretch and a flash (white
frames) inside each segment, black frames between segments and, halfway, a stretch where the camera pans across a
photo that is no endoscopy (the scope out of the patient), beside a ground-truth CSV of the segments (start, end,
label in seconds; the black gaps and the photo are labelled as outside the training data). Not endoscopy: a test of
the video pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from kvasir_mobileone.data.foreign import foreign_images
from kvasir_mobileone.extras import require
from kvasir_mobileone.io import atomic_path, write_csv

GAP = "outside the training data"  # the truth's label of the black frames between segments (timeline.OUTSIDE_STATE)
FOREIGN = "foreign"  # the script's name of the photo stretch; its truth label is GAP


def examination_script(
    classes: tuple[str, ...], segment_seconds: float, gap_seconds: float, foreign_seconds: float = 0.0
) -> list[tuple]:
    """(label, start, end) of every segment and gap, in seconds; the foreign stretch after the middle segment's
    gap."""
    rows, t = [], 0.0
    for i, name in enumerate(classes):
        if i:
            rows.append((GAP, t, t + gap_seconds))
            t += gap_seconds
        if i == len(classes) // 2 and i and foreign_seconds:
            rows += [(FOREIGN, t, t + foreign_seconds), (GAP, t + foreign_seconds, t + foreign_seconds + gap_seconds)]
            t += foreign_seconds + gap_seconds
        rows.append((name, t, t + segment_seconds))
        t += segment_seconds
    return rows


def write_examination(
    path: str | Path,
    classes: tuple[str, ...],
    draw,
    seed: int = 0,
    size: tuple[int, int] = (720, 576),
    fps: int = 25,
    segment_seconds: float = 6.0,
    gap_seconds: float = 0.6,
    foreign_seconds: float = 2.0,
    codec: str = "libx264",
) -> tuple[Path, Path]:
    """(the MP4, its truth CSV). H.264 (yuv420p, moov first); the views drawn by `draw(class, (w, h), rng,
    classes=...)` (data/synth.py's synth_image, which passes itself: no import back)."""
    av = require("av", "video")
    path = Path(path)
    rng = np.random.default_rng(seed)
    width, height = size[0] // 2 * 2, size[1] // 2 * 2  # yuv420p wants even sides
    script = examination_script(classes, segment_seconds, gap_seconds, foreign_seconds)
    grain = [rng.normal(0, 3, (height, width, 1)).astype(np.int16) for _ in range(4)]
    with atomic_path(path) as tmp:
        container = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "faststart"})
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "20"}
        frame_index = 0
        for label, start, end in script:
            count = round(end * fps) - round(start * fps)
            if label == GAP:
                pictures = [np.zeros((height, width, 3), np.uint8)] * count
            elif label == FOREIGN:
                pictures = pan_frames(count, (width, height))
            else:
                pictures = segment_frames(draw, label, classes, count, fps, (width, height), rng, grain)
            for picture in pictures:
                frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                frame.pts = frame_index
                for packet in stream.encode(frame):
                    container.mux(packet)
                frame_index += 1
        for packet in stream.encode():
            container.mux(packet)
        container.close()
    rows = [(GAP if label == FOREIGN else label, start, end) for label, start, end in script]
    truth = write_csv(path.with_name(path.stem + "_truth.csv"), ["label", "start", "end"], rows)
    return path, truth


def segment_frames(draw, label, classes, count, fps, size, rng, grain):
    """One segment's frames, one at a time: three views of the class (the frame's outline and overlay stay where
    they are, as an endoscope's do) that the camera moves between, each passage a 0.5 s cross-fade, with a 0.4 s
    blurred stretch and a 2-frame flash at random places."""
    width, height = size
    views = [np.asarray(draw(label, (width, height), rng, classes=classes)).astype(np.float32) for _ in range(3)]
    blur_start = int(rng.integers(fps, max(fps + 1, count - fps)))
    flash = int(rng.integers(0, count - 2))
    fade = max(1, fps // 2)
    for i in range(count):
        position = 3 * i / max(count, 1)
        k = min(2, int(position))
        into = (i - k * count / 3) / fade  # frames into the passage towards the next view
        w = 0.0 if k == 2 or into < (count / 3 - fade) / fade else min(1.0, into - (count / 3 - fade) / fade)
        picture = ((1 - w) * views[k] + w * views[min(2, k + 1)]).astype(np.uint8)
        if blur_start <= i < blur_start + int(0.4 * fps):
            picture = np.asarray(Image.fromarray(picture).filter(ImageFilter.GaussianBlur(max(2, width // 80))))
        if flash <= i < flash + 2:
            picture = np.full_like(picture, 250)
        yield np.clip(picture.astype(np.int16) + grain[i % len(grain)], 0, 255).astype(np.uint8)


def pan_frames(count: int, size: tuple[int, int]):
    """The camera panning across scikit-learn's temple photo (data/foreign.py): no endoscopy in sight."""
    photo = foreign_images(crops=0)["temple"]
    h, w = photo.shape[:2]
    side = h * 3 // 4
    for i in range(count):
        x = int((w - side) * i / max(1, count - 1))
        yield np.asarray(Image.fromarray(photo[h - side :, x : x + side]).resize(size, Image.BILINEAR))

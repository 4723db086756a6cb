"""`kvasir predict VIDEO --annotate true`: the video again, each frame with its smoothed label (and the frame's
own answer and top probability) drawn in a band along the top — with --explain true as well, its Grad-CAM
heatmap —, as H.264 MP4 at the video's frame rate, 360 to 720 pixels high (a small video is enlarged, so that the
words stay legible). Frames that were not classified (--every, --fps) carry the label of the last one that was."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from kvasir_mobileone.deploy.video import clock, open_video
from kvasir_mobileone.extras import require
from kvasir_mobileone.io import atomic_path

MIN_HEIGHT, MAX_HEIGHT = 360, 720


def scaled_size(width: int, height: int, target_height: int) -> tuple[int, int]:
    """The picture's size at `target_height` pixels high, its aspect kept, both sides even (as H.264 wants)."""
    scale = target_height / height
    return int(width * scale) // 2 * 2, int(height * scale) // 2 * 2


@functools.cache
def fonts(height: int):
    """The label's and the caption's font for a picture `height` pixels high (Pillow's own font: nothing fetched)."""
    big, small = height // 20, height // 30
    return ImageFont.load_default(size=big), ImageFont.load_default(size=small), big, big + small + 14


def draw_band(pixels: np.ndarray, text: str, caption: str, colour: tuple) -> np.ndarray:
    """The picture with a black band along the top: `text` large, `caption` below it, a line in `colour` (the
    state's, as in the timeline) under both. The annotated video and the page's Live tab draw the same band."""
    picture = Image.fromarray(np.asarray(pixels, dtype=np.uint8))
    font, caption_font, big, band = fonts(picture.height)
    draw = ImageDraw.Draw(picture)
    draw.rectangle((0, 0, picture.width, band), fill=(0, 0, 0))
    draw.rectangle((0, band - 4, picture.width, band), fill=colour)
    draw.text((8, 3), text, fill=(255, 255, 255), font=font)
    draw.text((8, big + 6), caption, fill=(200, 200, 200), font=caption_font)
    return np.asarray(picture)


def annotate_video(
    path: Path,
    target: Path,
    indices: np.ndarray,
    labels: list[str],
    captions: list[str],
    colours: list[tuple],
    heat: list[np.ndarray] | None = None,
) -> Path:
    """Write `target`: decoded frame i shows labels[j] (and captions[j]) of the last classified frame j with
    indices[j] <= i, in colours[j], and with `heat` that frame's Grad-CAM heatmap laid over the picture."""
    av = require("av", "video")
    container, stream = open_video(path)
    rate = stream.average_rate or stream.guessed_rate or 25
    width, height = stream.codec_context.width, stream.codec_context.height
    width, height = scaled_size(width, height, min(MAX_HEIGHT, max(MIN_HEIGHT, height)))
    indices = np.asarray(indices)

    def readable():  # a truncated video: annotated as far as it can be read (the summary says where it stopped)
        try:
            yield from container.decode(stream)
        except (av.error.FFmpegError, ValueError):
            return

    with atomic_path(target) as tmp:
        try:
            out = av.open(str(tmp), mode="w", format="mp4", options={"movflags": "faststart"})
        except BaseException:
            container.close()
            raise
        try:
            encoder = out.add_stream("libx264", rate=rate)
            encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "23"}
            for i, frame in enumerate(readable()):
                j = max(0, int(np.searchsorted(indices, i, side="right")) - 1)
                pixels = frame.to_ndarray(width=width, height=height, format="rgb24")
                if heat is not None:
                    from kvasir_mobileone.deploy.explain import over_frame

                    pixels = over_frame(pixels, heat[j].astype(np.float32))
                t = float(frame.time) if frame.time is not None else i / float(rate)
                picture = draw_band(pixels, f"{clock(t)}  {labels[j]}", captions[j], colours[j])
                out_frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
                out_frame.pts = i
                for packet in encoder.encode(out_frame):
                    out.mux(packet)
            for packet in encoder.encode():
                out.mux(packet)
        finally:
            try:
                container.close()
            finally:
                out.close()
    return target

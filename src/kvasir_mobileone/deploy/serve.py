"""`kvasir serve`: a Gradio page for people who do not use a terminal. Drop images, read the top classes, the
Grad-CAM heatmap over each frame as taken and the time it took, beside the model's card. Private by default: bound
to 127.0.0.1, analytics off, no fonts or scripts fetched from the internet, an upload size limit, only the app's
own files served, uploads and heatmaps deleted.

Requests that arrive together are answered together: Gradio gathers up to --max_batch of them into one call, which
runs one onnxruntime batch and one Grad-CAM batch (one worker for the Images and Video tabs, so Grad-CAM's hooks are
never shared between threads). The Live tab's cameras (up to LIVE_CAMERAS at once) run beside it on the same
onnxruntime session, which is safe to call from several threads, without Grad-CAM."""

from __future__ import annotations

import os
import time
import warnings
from collections import Counter, deque
from pathlib import Path

import numpy as np
from PIL import Image

from kvasir_mobileone.answers import NOT_SURE, OUTSIDE
from kvasir_mobileone.deploy.annotate import draw_band
from kvasir_mobileone.deploy.card import card_summary, confusion_figure, without_confusion_table
from kvasir_mobileone.deploy.examination import band_colours
from kvasir_mobileone.deploy.explain import Explainer, over_frame
from kvasir_mobileone.deploy.live import LiveFeed
from kvasir_mobileone.deploy.predict import Prediction, classify
from kvasir_mobileone.deploy.runtime import load
from kvasir_mobileone.deploy.timeline import OUTSIDE_STATE
from kvasir_mobileone.deploy.video import clock
from kvasir_mobileone.extras import require
from kvasir_mobileone.images import RESAMPLE, load_rgb
from kvasir_mobileone.runs import CARD_NAME

UPLOAD_CAP_MB = 100  # Gradio refuses a whole upload beyond its limit: ours (per file, with a message) comes first
FRAME_DISPLAY_PX = 960  # frames are shown at most this wide or tall (the heatmap is laid over this copy)
DISCLAIMER = "**Research use only, not a medical device.** Do not use it for diagnosis or any clinical decision."


MB = 2**20  # a megabyte as the page's upload list counts it (Gradio's file list divides by 1024 twice)


ANNOTATE_SECONDS = 60  # the video tab draws the labels on clips up to this long (longer ones: the timeline only)
LIVE_EVERY_S = 0.1  # the Live tab's camera sends a frame this often (Gradio's stream_every)
LIVE_RESTART_S = 3.0  # a camera silent this long and started again begins a new examination (a fresh filter)
LIVE_SHOWN_PX = 640  # the Live tab shows the answer over the picture at most this wide
LIVE_LATENCY_WINDOW = 100  # the Live tab's latency figures are over this many last frames
LIVE_CAMERAS = 4  # browsers streaming at once (a stream holds its place while it runs); the next ones wait


def upload_cap_mb(max_file_mb: float, max_video_mb: float = 0) -> float:
    """Gradio's own upload limit: far above --max_file_mb (and --max_video_mb), so that one file over it is refused
    alone, on the page."""
    return max(UPLOAD_CAP_MB, 10 * max_file_mb, 2 * max_video_mb)


def size_text(size: int) -> str:
    """A file size as the page's upload list shows it (one decimal, MB of 1024 x 1024 bytes)."""
    return f"{size / MB:.1f} MB"


def unreadable(err: Exception) -> str:
    """Why a file cannot be read, in words (never an exception class name)."""
    from PIL import UnidentifiedImageError

    if isinstance(err, UnidentifiedImageError):
        return "not an image that can be read: its contents are not JPEG, PNG or another image format"
    if "truncated" in str(err).lower():
        return "not an image that can be read: the image data is cut short (an incomplete copy?)"
    return "not an image that can be read: the image data is damaged"


def numbered(names: list[str]) -> list[str]:
    """File names, a repeated one numbered in order: frame.jpg, frame.jpg (2), frame.jpg (3)."""
    total, seen = Counter(names), Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(f"{name} ({seen[name]})" if total[name] > 1 and seen[name] > 1 else name)
    return out


class PageModel:
    """The model behind the page, loaded once: onnxruntime for the answer (as `kvasir predict`), the fused torch
    model for the heatmap."""

    def __init__(self, model: str, top_k: int = 3):
        self.predictor = load(model)
        self.explainer = Explainer(self.predictor)
        self.top_k = min(top_k, len(self.predictor.class_names))
        found = self.predictor.uncertainty
        self.coverage = found.coverage if found and found.qhat is not None else None
        card = Path(model) / CARD_NAME
        self.card = card.read_text().split("---", 2)[-1] if card.is_file() else card_summary(self.predictor)

    def read_upload(self, path: str, name: str, max_bytes: int) -> dict:
        """{file, array, frame} for one upload, or {file, error} saying in words why it cannot be used."""
        size = os.path.getsize(path)
        if size == 0:
            return {"file": name, "error": "the file is empty (0 bytes)"}
        if size > max_bytes:
            return {"file": name, "error": f"the file is {size_text(size)}, over the {max_bytes / MB:g} MB limit"}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                array, _ = self.predictor.model_input.read(path)
                frame = load_rgb(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return {"file": name, "error": "refused: a decompression bomb (far more pixels than any endoscopy frame)"}
        except Exception as err:  # whatever Pillow cannot decode: a message on the page, never a traceback
            return {"file": name, "error": unreadable(err)}
        frame.thumbnail((FRAME_DISPLAY_PX, FRAME_DISPLAY_PX))
        return {"file": name, "error": "", "array": array, "frame": np.asarray(frame), "path": path}

    def read_uploads(self, paths: list[str], max_bytes: int) -> list[dict]:
        """read_upload of each file of one request, a repeated file name numbered."""
        names = numbered([Path(p).name for p in paths])
        return [self.read_upload(p, n, max_bytes) for p, n in zip(paths, names, strict=True)]

    def answer_many(self, requests: list[list[str]], max_bytes: int) -> list[list[dict]]:
        """Answers for several requests (each a list of uploaded paths) in one model batch and one Grad-CAM batch:
        per file its top classes, the heatmap over the frame as taken, the frame, and the milliseconds per image
        of the batch; or the reason it cannot be read."""
        start = time.perf_counter()
        answers = [self.read_uploads(paths, max_bytes) for paths in requests]
        good = [a for request in answers for a in request if not a["error"]]
        if good:
            batch = np.stack([a["array"] for a in good])
            _, predictions = classify(self.predictor, batch, [a["file"] for a in good], self.top_k)
            heat = self.explainer.heatmaps(batch)
            for a, prediction, h in zip(good, predictions, heat, strict=True):
                # an input outside the training data gets no heatmap: the network's evidence means nothing there
                overlay = a["frame"] if prediction.answer == OUTSIDE else over_frame(a["frame"], h)
                a |= {"prediction": prediction, "overlay": overlay}
            ms = 1000 * (time.perf_counter() - start) / len(good)
            for a in good:
                a["ms"] = ms
        return answers


def build_app(
    model: str,
    max_file_mb: float = 10.0,
    top_k: int = 3,
    max_batch: int = 8,
    keep_minutes: float = 10,
    max_video_mb: float = 200.0,
):
    """The Gradio Blocks app (not launched): a tab for images, a tab for a video. Uploads, heatmaps and video
    outputs older than keep_minutes are deleted every keep_minutes, and all of them when the server stops."""
    gr = require("gradio", "serve")
    page = PageModel(model, top_k)
    handlers = Handlers(page, int(max_file_mb * MB), int(max_video_mb * MB))
    keep = max(60, int(keep_minutes * 60))
    with gr.Blocks(analytics_enabled=False, title="kvasir-mobileone", delete_cache=(keep, keep)) as app:
        gr.Markdown(f"# Endoscopy image classifier: {page.predictor.model_name}\n\n{DISCLAIMER}")
        with gr.Tabs():
            images = images_tab(gr, page, handlers, max_file_mb)
            video = video_tab(gr, max_video_mb)
            live = live_tab(gr)
        images["button"].click(
            handlers.classify,
            inputs=images["files"],
            outputs=[images["overlays"], images["frames"], images["table"], images["message"]],
            api_name="classify",
            batch=True,
            max_batch_size=max_batch,
            concurrency_limit=1,  # one worker: the model and Grad-CAM's hooks are never shared between threads
            concurrency_id="model",  # ... and the video tab waits its turn for the same model
        )
        images["show"].change(
            lambda on: (gr.update(visible=on), gr.update(visible=not on)),
            images["show"],
            [images["overlays"], images["frames"]],
            queue=False,
        )

        def watch(file, progress=gr.Progress(track_tqdm=True)):  # Gradio reads the default: a progress bar
            """handlers.watch with the video's progress bar (frames done, time left) shown over the outputs."""
            return handlers.watch(file)

        live["camera"].stream(
            handlers.live,
            inputs=[live["camera"], live["session"]],
            outputs=[live["shown"], live["answer"], live["figures"], live["session"]],
            api_name="live",
            stream_every=LIVE_EVERY_S,
            concurrency_limit=LIVE_CAMERAS,  # each stream: Gradio keeps the newest frame that came while busy
            concurrency_id="live",  # a video being watched on the page does not hold up the camera
            show_progress="hidden",
        )
        video["button"].click(
            watch,
            inputs=video["clip"],
            outputs=[video["timeline"], video["segments"], video["message"], video["annotated"]],
            api_name="watch",
            concurrency_limit=1,
            concurrency_id="model",
        )
    return app


class Handlers:
    """What the page's events call: classify a batch of requests, check uploads as they are dropped, watch a video."""

    def __init__(self, page: PageModel, max_bytes: int, max_video_bytes: int):
        self.page, self.max_bytes, self.max_video_bytes = page, max_bytes, max_video_bytes

    def classify(self, batches):
        """Gradio's batched call: one list of uploaded files per request; one list per output back."""
        requests = [[f if isinstance(f, str) else f.name for f in files or []] for files in batches]
        outputs = ([], [], [], [])
        for answers in self.page.answer_many(requests, self.max_bytes):
            for out, value in zip(outputs, respond(answers, self.page.top_k), strict=True):
                out.append(value)
        return outputs

    def check_uploads(self, files):
        """As soon as files are dropped: those that will not be classified, and why (before Classify)."""
        paths = [f if isinstance(f, str) else f.name for f in files or []]
        found = self.page.read_uploads(paths, self.max_bytes)
        bad = [a for a in found if a["error"]]
        if not paths:
            return ""
        text = f"{len(paths) - len(bad)} of {len(paths)} files ready to classify."
        return text + "".join(f"\n- **{a['file']}** will not be classified: {a['error']}" for a in bad)

    def live(self, frame, session):
        """The Live tab: one camera frame — the newest: a frame that arrives while the model is busy replaces the
        one waiting (Gradio's stream) — classified and smoothed causally as `kvasir watch` does; (the frame with
        the live answer drawn over it, the answer, the figures, the session)."""
        arrived = time.perf_counter()
        if frame is None:
            return None, "", "", session
        if session is None or arrived - session.last > LIVE_RESTART_S:
            session = LiveSession(self.page.predictor, arrived)
        return (*session.step(np.asarray(frame), arrived), session)

    def watch(self, file):
        """The video tab: the timeline, the segments, a summary (a live region) and, for a short clip, the clip
        with its labels."""
        if not file:
            return None, [], "Drop a video first.", None
        path = Path(file if isinstance(file, str) else file.name)
        return watch_video(self.page.predictor, path, self.max_video_bytes)


def images_tab(gr, page: PageModel, handlers: Handlers, max_file_mb: float) -> dict:
    """The Images tab: the drop zone, Classify, the live message, the answers, the heatmaps or frames, the card."""
    with gr.Tab("Images", elem_id="images-tab"), gr.Row(equal_height=False):
        with gr.Column(scale=3, min_width=480):
            files = gr.File(
                file_count="multiple",
                label=f"Images (JPEG, PNG ...), up to {max_file_mb:g} MB each",
                elem_id="images",
            )
            button = gr.Button("Classify", variant="primary", elem_id="classify")
            message = gr.Markdown(elem_id="message")
            files.change(handlers.check_uploads, files, message, queue=False)
            table = gr.Dataframe(
                headers=table_headers(page.top_k),
                label=f"Answers: a class, {NOT_SURE!r} or {OUTSIDE!r}; the prediction set holds the true "
                f"class {round(100 * page.coverage)}% of the time"
                if page.coverage
                else "Answers and top classes",
                elem_id="results",
                interactive=False,
                wrap=True,
            )
            show = gr.Checkbox(value=True, label="Show the heatmap over each frame", elem_id="show-heatmap")
            overlays = gr.Gallery(
                label="Grad-CAM over the frame: red where the evidence for the top class is",
                elem_id="heatmaps",
                columns=2,
                height="auto",
                object_fit="contain",
                format="jpeg",  # far faster to encode than WebP or PNG
            )
            frames = gr.Gallery(
                label="The frames as taken", elem_id="frames", columns=2, height="auto", visible=False, format="jpeg"
            )
        with gr.Column(scale=2, min_width=320), gr.Accordion("Model card", open=True):
            gr.Markdown(f"{DISCLAIMER}\n\n{without_confusion_table(page.card)}", elem_id="card")
            figure = confusion_figure(page.predictor)
            if figure is not None:
                gr.Plot(figure, label="Confusion matrix", show_label=False, elem_id="confusion")
    return {
        "files": files,
        "button": button,
        "message": message,
        "table": table,
        "show": show,
        "overlays": overlays,
        "frames": frames,
    }


def video_tab(gr, max_video_mb: float) -> dict:
    """The Video tab: the drop zone, Watch, the live message, the timeline, the segments, the annotated clip."""
    with gr.Tab("Video", elem_id="video-tab"):
        gr.Markdown(
            "A whole examination: every frame classified, then smoothed over time into segments (an "
            "HMM with a state for frames outside the training data; `kvasir predict VIDEO` does the same). "
            f"Clips up to {ANNOTATE_SECONDS} s come back with their labels drawn on."
        )
        clip = gr.File(
            file_count="single",
            file_types=["video"],
            label=f"Video (MP4, MOV, AVI, MKV ...), up to {max_video_mb:g} MB",
            elem_id="video",
        )
        button = gr.Button("Watch", variant="primary", elem_id="watch")
        message = gr.Markdown(elem_id="video-message")
        timeline = gr.Image(label="Timeline", type="filepath", elem_id="timeline", interactive=False)
        segments_table = gr.Dataframe(
            headers=list(SEGMENT_HEADERS),
            label="Segments after smoothing",
            elem_id="segments",
            interactive=False,
            wrap=True,
        )
        annotated = gr.Video(label="The clip with its labels", elem_id="annotated", interactive=False)
    return {
        "clip": clip,
        "button": button,
        "message": message,
        "timeline": timeline,
        "segments": segments_table,
        "annotated": annotated,
    }


def live_tab(gr) -> dict:
    """The Live tab: the browser's camera (a capture card shows up as one), the answer over the picture, the live
    answer (a live region: read out when it changes) and the figures: frames answered and skipped, latency."""
    with gr.Tab("Live", elem_id="live-tab"):
        gr.Markdown(
            "A live examination: the browser's camera (an endoscopy tower's capture card shows up as one) sends a "
            f"frame every {LIVE_EVERY_S:g} s; each is classified as it comes and smoothed over time with the past "
            "frames only (`kvasir watch` does the same from the command line). A frame that arrives while the model "
            "is busy is skipped, never queued, so the answer never falls behind. Start the camera below; the "
            "answer is read out when it changes."
        )
        with gr.Row(equal_height=False):
            camera = gr.Image(
                sources=["webcam"],
                streaming=True,
                type="numpy",
                label="Camera",
                elem_id="camera",
                webcam_options=gr.WebcamOptions(mirror=False),  # an endoscope's picture as it is, never mirrored
            )
            shown = gr.Image(
                label="The live answer over the picture",
                elem_id="live-frame",
                interactive=False,
                format="jpeg",
                show_label=False,  # the label would cover the band the answer is drawn in (the image keeps a name)
            )
        answer = gr.Markdown(elem_id="live-answer")
        figures = gr.Markdown(elem_id="live-figures")
        session = gr.State(None)
    return {"camera": camera, "shown": shown, "answer": answer, "figures": figures, "session": session}


class LiveSession:
    """One browser's live examination: the feed (the model and the forward filter), the frames answered and
    skipped, the latency of the last frames."""

    def __init__(self, predictor, started: float):
        self.feed = LiveFeed(predictor)
        self.colours = band_colours(list(predictor.class_names))
        self.started = self.last = started
        self.answered, self.skipped = 0, 0
        self.latencies = deque(maxlen=LIVE_LATENCY_WINDOW)

    def step(self, frame: np.ndarray, arrived: float) -> tuple:
        """(the picture with the answer drawn over it, the answer, the figures) of one camera frame that arrived at
        `arrived` (time.perf_counter()); its latency is from the start of this call to the answer."""
        began = time.perf_counter()
        if self.answered:  # the camera's frames since the last answered one that never reached the model (Gradio
            # does not count them: estimated from the gap, one frame every LIVE_EVERY_S)
            self.skipped += max(0, round((arrived - self.last) / LIVE_EVERY_S) - 1)
        self.last = arrived
        picture = Image.fromarray(frame.astype(np.uint8)).convert("RGB")
        model_input = self.feed.predictor.model_input
        size = model_input.image_size
        pixels = np.asarray(picture.resize((size, size), RESAMPLE[model_input.interpolation]))
        t = arrived - self.started
        a = self.feed.answer(pixels, t, "camera")
        self.answered += 1
        picture.thumbnail((LIVE_SHOWN_PX, LIVE_SHOWN_PX))
        shown = draw_band(np.asarray(picture), f"{clock(t)}  {a.label}", f"this frame: {a.own}", self.colours[a.live])
        self.latencies.append(time.perf_counter() - began)
        ms = 1000 * np.array(self.latencies)
        answer = f"Live: **{a.label}**" + ("" if a.label == OUTSIDE_STATE else f" ({a.live_p:.0%})")
        figures = (
            f"{self.answered} frames answered in {clock(t, tenths=True)}, about {self.skipped} skipped (from the "
            f"gaps between them: the camera sends one every {LIVE_EVERY_S:g} s). Time to answer on the server, from "
            f"the frame's turn to its answer: {ms[-1]:.0f} ms, p50 {np.percentile(ms, 50):.0f} ms, p95 "
            f"{np.percentile(ms, 95):.0f} ms over the last {len(ms)} frames. This frame alone: {a.own}."
        )
        return shown, answer, figures


def answer_text(a: Prediction) -> str:
    """One image's answer as the page writes it, its certainty in words first: "outside the training data" (no
    class), "not sure" with the set, "uncertain" when the prediction set holds more than the class, or the class
    with its probability."""
    top, p = a.top[0]
    if a.answer == OUTSIDE:
        why = "no picture" if a.no_picture else "not like the training images"
        return f"⚠ {OUTSIDE} ({why}): no class, no heatmap"
    if a.answer == NOT_SURE:
        return f"? {NOT_SURE}: {a.prediction_set or top} (top {p:.0%})"
    others = [c for c in (a.prediction_set or "").split(" or ") if c and c != a.answer]
    if others:
        return f"uncertain: {a.answer} ({p:.0%}), or {' or '.join(others)}"
    return f"{a.answer} ({p:.0%})"


def page_cell(a: Prediction, key: str, i: int) -> str:
    """One cell of the page's table: the answer in words, the i-th class with its probability, a field as text."""
    if key == "answer":
        return answer_text(a)
    if key == "top":
        return "—" if a.answer == OUTSIDE else f"{a.top[i][0]} ({a.top[i][1]:.3f})"
    if key == "prediction_set" and a.answer == OUTSIDE:
        return "—"
    value = getattr(a, key)
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table_headers(top_k: int) -> list[str]:
    """The page's table: the file, Prediction's page columns, the time per image."""
    return ["file", *[title for _, _, title in Prediction.page_columns(top_k)], "ms/image"]


def respond(answers: list[dict], top_k: int) -> tuple:
    """(heatmap gallery, frame gallery, table rows, message) of one request. The message (a live region) says every
    answer, so that a screen reader reads the results, not only their count."""
    good = [a for a in answers if not a["error"]]
    overlays = [(a["overlay"], f"{a['file']}: {answer_text(a['prediction'])}") for a in good]
    frames = [(a["path"], a["file"]) for a in good]  # the upload itself: nothing to encode
    columns = Prediction.page_columns(top_k)
    table = [[a["file"], *(page_cell(a["prediction"], k, i) for k, i, _ in columns), round(a["ms"])] for a in good]
    problems = "\n".join(f"- **{a['file']}**: {a['error']}" for a in answers if a["error"])
    if not answers:
        message = "Drop one or several images first."
    else:
        message = f"Classified {len(good)} of {len(answers)} images."
        message += "".join(f"\n- {a['file']}: {answer_text(a['prediction'])}" for a in good)
        if problems:
            message += f"\n\nCould not classify:\n{problems}"
    return overlays, frames, table, message


SEGMENT_HEADERS = ("class", "start", "end", "duration (s)", "frames", "mean probability")


def watch_video(predictor, path: Path, max_bytes: int) -> tuple:
    """(timeline PNG, segment rows, message, annotated MP4 or None) of one uploaded video, through the same
    run_video as `kvasir predict VIDEO`; a file that cannot be read gets its sentence, never a traceback."""
    import tempfile

    from kvasir_mobileone.deploy.examination import run_video
    from kvasir_mobileone.deploy.video import VideoError

    size = path.stat().st_size
    start = time.perf_counter()
    if size > max_bytes:
        return None, [], f"**{path.name}** is {size_text(size)}, over the {max_bytes / MB:g} MB limit.", None
    out = Path(tempfile.mkdtemp(prefix="video-"))  # inside GRADIO_TEMP_DIR under `kvasir serve`: cleared with it
    try:
        from kvasir_mobileone.deploy.video import duration_of, open_video

        container, stream = open_video(path)
        seconds = duration_of(container, stream)
        container.close()
        short = seconds is not None and seconds <= ANNOTATE_SECONDS
        summary = run_video(predictor, path, out, annotate=short)
    except VideoError as err:
        return None, [], f"**{path.name}** cannot be watched: {str(err).removeprefix(str(path) + ': ')}", None
    if not summary["frames_classified"]:
        return None, [], f"**{path.name}**: no frame could be classified ({summary['stopped']}).", None
    from kvasir_mobileone.io import read_csv
    from kvasir_mobileone.runs import VIDEO_ANNOTATED_NAME, VIDEO_SEGMENTS_NAME, VIDEO_TIMELINE_NAME

    rows = read_csv(out / VIDEO_SEGMENTS_NAME)
    table = [
        [
            r["class"],
            clock(float(r["start"]), True),
            clock(float(r["end"]), True),
            f"{float(r['duration']):.1f}",
            r["frames"],
            "—" if r["class"] == OUTSIDE else r["mean_probability"],  # no class: its probability says nothing
        ]
        for r in rows
    ]
    message = (
        f"Watched **{path.name}**: {summary['frames_classified']} frames classified in {summary['seconds']:.1f} s "
        f"({summary['realtime_factor']:.1f}x real time), {len(rows)} segments; results in "
        f"{time.perf_counter() - start:.1f} s with the timeline" + (" and the clip with its labels." if short else ".")
    )
    message += "".join(
        f"\n- {clock(float(r['start']), True)} to {clock(float(r['end']), True)}: {r['class']}" for r in rows
    )
    if summary["stopped"]:
        message += f"\n\nNote: {summary['stopped']}."
    clip = str(out / VIDEO_ANNOTATED_NAME) if summary.get("annotated") else None
    return str(out / VIDEO_TIMELINE_NAME), table, message, clip

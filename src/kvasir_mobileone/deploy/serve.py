"""`kvasir serve`: a Gradio page for people who do not use a terminal. Drop images, read the top classes, the
Grad-CAM heatmap and the time it took, beside the model's card. Private by default: bound to 127.0.0.1, analytics
off, no fonts or scripts fetched from the internet, an upload size limit, only the app's own files served."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

from kvasir_mobileone.deploy.card import CARD_NAME
from kvasir_mobileone.deploy.explain import Explainer
from kvasir_mobileone.deploy.predict import probabilities, top_classes
from kvasir_mobileone.deploy.runtime import load_predictor
from kvasir_mobileone.images import read_network_input

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # never a web font: nothing is fetched from outside
MONO_FONTS = ["ui-monospace", "monospace"]
UPLOAD_CAP_MB = 100  # Gradio refuses a whole upload beyond its limit: ours (per file, with a message) comes first


def upload_cap_mb(max_file_mb: float) -> float:
    """Gradio's own upload limit: far above --max_file_mb, so that one file over it is refused alone, on the page."""
    return max(UPLOAD_CAP_MB, 10 * max_file_mb)


DISCLAIMER = "**Research use only, not a medical device.** Do not use it for diagnosis or any clinical decision."


class PageModel:
    """The model behind the page, loaded once: onnxruntime for the answer (as `kvasir predict`), the fused torch
    model for the heatmap."""

    def __init__(self, model: str, top_k: int = 3):
        self.predictor = load_predictor(model)
        self.explainer = Explainer(model)
        self.meta = self.predictor.metadata
        self.top_k = min(top_k, len(self.meta["class_names"]))
        card = Path(model) / CARD_NAME
        self.card = card.read_text().split("---", 2)[-1] if card.is_file() else card_summary(self.meta)

    def answer(self, path: str, max_bytes: int) -> dict:
        """Top classes, heatmap and milliseconds for one file, or the reason it cannot be read."""
        name = Path(path).name
        size = os.path.getsize(path)
        if size == 0:
            return {"file": name, "error": "the file is empty (0 bytes)"}
        if size > max_bytes:
            limit = f"{max_bytes / 1e6:g} MB limit (--max_file_mb)"
            return {"file": name, "error": f"the file is {size / 1e6:.1f} MB, over the {limit}"}
        start = time.perf_counter()
        try:
            from PIL import Image

            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                array, pixels = read_network_input(path, self.meta["input"])
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            return {"file": name, "error": "refused: a decompression bomb (far more pixels than any endoscopy frame)"}
        except Exception as err:  # whatever Pillow cannot decode: a message on the page, never a traceback
            return {"file": name, "error": f"not an image that can be read ({type(err).__name__})"}
        probs = probabilities(self.predictor, array[None])[0]
        overlay, _ = self.explainer.explain(array, pixels)
        ms = 1000 * (time.perf_counter() - start)
        return {"file": name, "error": "", "ms": ms, "overlay": overlay} | top_classes(
            probs, self.meta["class_names"], self.top_k
        )


def card_summary(meta: dict) -> str:
    metrics = meta.get("test_metrics") or {}
    lines = [
        f"### {meta['model_name']}",
        f"Classes: {', '.join(meta['class_names'])}.",
        f"Input: {meta['input']['image_size']} × {meta['input']['image_size']} px.",
    ]
    if metrics.get("accuracy") is not None:
        low, high = metrics.get("accuracy_ci") or (metrics["accuracy"], metrics["accuracy"])
        lines.append(
            f"Test accuracy {100 * metrics['accuracy']:.2f}% (95% CI {100 * low:.2f}–{100 * high:.2f}%) "
            f"on {metrics['n']} images."
        )
    lines.append(meta.get("intended_use", ""))
    return "\n\n".join(lines)


def build_app(model: str, max_file_mb: float = 10.0, top_k: int = 3):
    """The Gradio Blocks app (not launched)."""
    import gradio as gr

    page = PageModel(model, top_k)
    max_bytes = int(max_file_mb * 1e6)

    def classify(files):
        answers = [page.answer(f if isinstance(f, str) else f.name, max_bytes) for f in files or []]
        good = [a for a in answers if not a["error"]]
        gallery = [(a["overlay"], f"{a['file']}: {a['top1']} ({a['p1']:.3f}), {a['ms']:.0f} ms") for a in good]
        table = [
            [
                a["file"],
                *(v for i in range(page.top_k) for v in (a[f"top{i + 1}"], round(a[f"p{i + 1}"], 4))),
                round(a["ms"]),
            ]
            for a in good
        ]
        problems = "\n".join(f"- **{a['file']}**: {a['error']}" for a in answers if a["error"])
        message = f"Could not classify:\n{problems}" if problems else ""
        if not answers:
            message = "Drop one or several images first."
        return gallery, table, message

    headers = ["file", *(h for i in range(page.top_k) for h in (f"class {i + 1}", f"p {i + 1}")), "ms"]
    with gr.Blocks(analytics_enabled=False, title="kvasir-mobileone") as app:
        gr.Markdown(f"# Endoscopy image classifier: {page.meta['model_name']}\n\n{DISCLAIMER}")
        with gr.Row():
            with gr.Column(scale=2):
                files = gr.File(file_count="multiple", label="Images (JPEG, PNG ...)", elem_id="images")
                button = gr.Button("Classify", variant="primary", elem_id="classify")
                message = gr.Markdown(elem_id="message")
                table = gr.Dataframe(headers=headers, label="Top classes", elem_id="results", interactive=False)
                gallery = gr.Gallery(
                    label="Grad-CAM: where the evidence for the top class is",
                    elem_id="heatmaps",
                    columns=3,
                    height="auto",
                )
            with gr.Column(scale=1), gr.Accordion("Model card", open=True):
                gr.Markdown(f"{DISCLAIMER}\n\n{page.card}", elem_id="card")
        button.click(classify, inputs=files, outputs=[gallery, table, message], api_name="classify")
    return app

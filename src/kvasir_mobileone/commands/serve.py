"""`kvasir serve`: a web page on 127.0.0.1 for people who do not use a terminal."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile

from kvasir_mobileone.deploy.page_style import page_style
from kvasir_mobileone.deploy.serve import build_app, upload_cap_mb
from kvasir_mobileone.extras import require


def serve(
    model: str = "bundle",
    port: int = 7860,
    host: str = "127.0.0.1",
    max_file_mb: float = 10.0,
    top_k: int = 3,
    max_batch: int = 8,
    keep_minutes: float = 10.0,
    max_video_mb: float = 200.0,
) -> None:
    """Serve a web page that classifies dropped images and videos, with heatmaps.

    A web page on http://HOST:PORT: drop images, get the top classes, the Grad-CAM heatmap over each frame and
    the time; or, in the Video tab, drop a video (up to --max_video_mb) and get its timeline and segments.

    Bound to 127.0.0.1 unless --host says otherwise; analytics off; nothing fetched from the internet. Requests
    arriving together are answered in one batch of up to --max_batch (1: one at a time). Uploads and heatmaps live
    in a folder of their own, cleared of files older than --keep_minutes and deleted when the server stops."""
    require("gradio", "serve")  # both before the model is loaded
    require("pytorch_grad_cam", "explain")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    files = tempfile.mkdtemp(prefix="kvasir-serve-")
    os.environ["GRADIO_TEMP_DIR"] = files  # read by Gradio when it saves an upload or an output image
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # a stop request still runs the clean-up below
    try:
        app = build_app(model, max_file_mb, top_k, max_batch, keep_minutes, max_video_mb)
        print(f"Serving {model} on http://{host}:{port} (Ctrl+C to stop)")
        print(f"Uploads and heatmaps: {files} (files older than {keep_minutes:g} min deleted; all of it at stop)")
        app.launch(
            server_name=host,
            server_port=port,
            max_file_size=int(
                upload_cap_mb(max_file_mb, max_video_mb) * 1e6
            ),  # a hard cap; the per-file limit is the page's
            share=False,
            show_error=False,
            ssr_mode=False,
            pwa=False,
            mcp_server=False,
            quiet=True,
            **page_style(),
        )
    finally:
        shutil.rmtree(files, ignore_errors=True)
        print(f"Deleted {files}", flush=True)

"""`kvasir serve`: a web page on 127.0.0.1 for people who do not use a terminal."""

from __future__ import annotations

import os

from kvasir_mobileone.deploy.serve import MONO_FONTS, SYSTEM_FONTS, build_app, upload_cap_mb


def serve(
    model: str = "bundle", port: int = 7860, host: str = "127.0.0.1", max_file_mb: float = 10.0, top_k: int = 3
) -> None:
    """A web page on http://HOST:PORT: drop images, get the top classes, the Grad-CAM heatmap and the time.

    Bound to 127.0.0.1 unless --host says otherwise; analytics off; nothing fetched from the internet."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    app = build_app(model, max_file_mb, top_k)
    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS)
    print(f"Serving {model} on http://{host}:{port} (Ctrl+C to stop)")
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=int(upload_cap_mb(max_file_mb) * 1e6),  # a hard cap; the per-file limit is the page's
        theme=theme,
        share=False,
        show_error=False,
        ssr_mode=False,
        pwa=False,
        mcp_server=False,
        quiet=True,
    )

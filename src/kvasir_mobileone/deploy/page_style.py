"""How the page looks: system fonts (nothing fetched from outside), a primary colour with AA contrast, a visible
focus ring, layout rules for tables, galleries and the card, and the live region that screen readers announce.
What the page does with a request is deploy/serve.py."""

from __future__ import annotations

from kvasir_mobileone.extras import require

SYSTEM_FONTS = ["ui-sans-serif", "system-ui", "sans-serif"]  # never a web font: nothing is fetched from outside
MONO_FONTS = ["ui-monospace", "monospace"]
PRIMARY, PRIMARY_HOVER, FOCUS = "#9a3412", "#7c2d12", "#1d4ed8"  # white on #9a3412: 7.3:1 (WCAG AA needs 4.5:1)
CSS = f"""
:focus-visible {{ outline: 3px solid {FOCUS} !important; outline-offset: 2px !important; }}
#results table {{ width: 100%; }}
#results td, #results th {{ white-space: normal; overflow-wrap: anywhere; }}
#heatmaps, #frames, #heatmaps .grid-wrap, #frames .grid-wrap {{ height: auto !important; max-height: none !important;
  overflow: visible !important; }}
#heatmaps .thumbnail-item, #frames .thumbnail-item {{ height: auto !important; aspect-ratio: auto !important; }}
#heatmaps .thumbnail-item img, #frames .thumbnail-item img {{ height: auto !important; object-fit: contain; }}
#heatmaps .caption-label, #frames .caption-label {{ position: static; white-space: normal; overflow: visible;
  text-overflow: clip; max-width: none; }}
#card pre {{ white-space: pre-wrap !important; overflow: visible !important; }}
footer .run-history, footer .show-api, footer .built-with, footer .settings {{ color: #374151 !important; }}
#card pre .token {{ color: inherit !important; }}
"""
# results and problems are read out by screen readers when they change (Gradio's Markdown has no live region)
ANNOUNCE = """() => { for (const id of ["message"]) { const el = document.getElementById(id);
  if (el) { el.setAttribute("role", "status"); el.setAttribute("aria-live", "polite"); } } }"""


def page_style() -> dict:
    """What `launch` takes for the page's look: system fonts, a primary colour with AA contrast, a visible focus
    ring, and the live region for announcements."""
    gr = require("gradio", "serve")

    theme = gr.themes.Default(font=SYSTEM_FONTS, font_mono=MONO_FONTS).set(
        button_primary_background_fill=PRIMARY,
        button_primary_background_fill_hover=PRIMARY_HOVER,
        button_primary_text_color="#ffffff",
        button_primary_background_fill_dark=PRIMARY,
        button_primary_background_fill_hover_dark=PRIMARY_HOVER,
        button_primary_text_color_dark="#ffffff",
    )
    return {"theme": theme, "css": CSS, "js": ANNOUNCE}

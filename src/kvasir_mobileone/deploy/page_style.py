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
#results table, #segments table {{ width: 100%; }}
#results td, #results th, #segments td, #segments th {{ width: auto !important; min-width: 0 !important;
  max-width: none !important; }}
#results td .cell-wrap, #results th .header, #results th span, #segments td .cell-wrap, #segments th .header,
#segments th span {{ white-space: normal !important; word-break: normal !important; overflow-wrap: normal !important;
  hyphens: none !important; }}
#results .table-wrap, #results .table-container, #segments .table-wrap, #segments .table-container {{
  overflow-x: auto !important; }}
#heatmaps label[data-testid="block-label"], #frames label[data-testid="block-label"] {{ position: static !important; }}
#heatmaps, #frames, #heatmaps .grid-wrap, #frames .grid-wrap {{ height: auto !important; max-height: none !important;
  overflow: visible !important; }}
#heatmaps .thumbnail-item, #frames .thumbnail-item {{ height: auto !important; aspect-ratio: auto !important; }}
#heatmaps .thumbnail-item img, #frames .thumbnail-item img {{ height: auto !important; object-fit: contain; }}
#heatmaps .caption-label, #frames .caption-label {{ position: static; white-space: normal; overflow: visible;
  text-overflow: clip; max-width: none; }}
#card pre {{ overflow-x: auto !important; max-width: 100%; }}
#card pre, #card pre code {{ white-space: pre !important; }}
footer .run-history, footer .show-api, footer .built-with, footer .settings {{ color: #374151 !important; }}
#card pre .token {{ color: inherit !important; }}
#annotated video {{ max-height: 480px; }}
button[role="tab"][aria-selected="true"] {{ color: {PRIMARY} !important; }}
#images .or, #video .or {{ color: #4b5563 !important; }}
#images td.filename, #video td.filename {{ display: flex; flex-wrap: wrap; white-space: normal !important; }}
#images td.filename span, #video td.filename span {{ white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: none !important; min-width: 0; overflow-wrap: anywhere; }}
#timeline label[data-testid="block-label"] {{ position: static !important; }}
#images button.icon-button:has(button.upload-container), #video button.icon-button:has(button.upload-container) {{
  display: none !important; }}
#live-answer [data-testid="status-tracker"], #live-figures [data-testid="status-tracker"],
#live-frame [data-testid="status-tracker"] {{ display: none !important; }}
@media (max-width: 640px) {{
  #results th:nth-child(n+3), #results td:nth-child(n+3), #segments th:nth-child(n+4), #segments td:nth-child(n+4) {{
    display: none !important; }}
  #results table, #segments table {{ width: 100% !important; }}
}}
"""
# the Live tab's outputs change ten times a second: Gradio's timer over them ("0.0s") would flicker, and be read
# out inside the live answer
# Gradio's "add more files" icon is a button holding its upload button (nested controls a screen reader cannot
# tell apart): hidden; more files are dropped on the list, or chosen again after clearing it.
# at phone width the tables keep the columns that answer, whole words in each: the file and its answer (the class
# with its probability, the other classes of its set, or why it has none), a segment's class, start and end; the
# rest is on the wider page and in the CSV
# results and problems are read out by screen readers when they change (Gradio's Markdown has no live region); the
# drop zone says what it takes (Gradio writes "Drop File Here" even for several files) and its button gets a name
# (Gradio leaves the untranslated key "common.upload" as its aria-label), kept so when Gradio draws them again
ANNOUNCE = """() => {
  const zones = { images: ["Upload images", "Drop images here"], video: ["Upload a video", "Drop a video here"] };
  const mend = () => {
    // the video and live tabs are drawn when first opened: mended then
    for (const id of ["message", "video-message", "live-answer"]) {
      const el = document.getElementById(id);
      if (el && el.getAttribute("aria-live") !== "polite") {
        el.setAttribute("role", "status"); el.setAttribute("aria-live", "polite"); } }
    document.querySelectorAll("#card pre:not([tabindex])").forEach(p => p.setAttribute("tabindex", "0"));
    // images Gradio leaves without a name: the timeline (and the button that opens it), the confusion matrix
    document.querySelectorAll("#timeline img").forEach(i => {
      if (i.alt !== "Timeline of the examination") i.alt = "Timeline of the examination"; });
    document.querySelectorAll("#timeline button:not([aria-label])").forEach(b => {
      if (!b.innerText.trim()) b.setAttribute("aria-label", "Timeline of the examination"); });
    // Gradio's empty outputs carry an aria-label on a plain div (a label nothing can take): an image with a name
    document.querySelectorAll('.empty[aria-label="Empty value"]:not([role])').forEach(d => {
      d.setAttribute("role", "img"); d.setAttribute("aria-label", "Nothing here yet"); });
    document.querySelectorAll("#live-frame img").forEach(i => {
      if (i.alt !== "The live answer over the picture") i.alt = "The live answer over the picture"; });
    document.querySelectorAll("#confusion img").forEach(i => {
      if (i.alt !== "Confusion matrix of the test split") i.alt = "Confusion matrix of the test split"; });
    for (const [id, [name, drop]] of Object.entries(zones)) {
      const zone = document.getElementById(id);
      if (!zone) continue;
      zone.querySelectorAll('button[aria-label="common.upload"], button[title="common.upload"]').forEach(b => {
        b.setAttribute("aria-label", name); b.setAttribute("title", name); });
      // the file input inside the drop-zone button: reached through the button, not a second stop of its own
      zone.querySelectorAll("button input[type=file]:not([tabindex])").forEach(i => {
        i.setAttribute("tabindex", "-1"); i.setAttribute("aria-hidden", "true"); });
      const walk = document.createTreeWalker(zone, NodeFilter.SHOW_TEXT);
      for (let n; (n = walk.nextNode()); ) if (n.nodeValue.trim() === "Drop File Here") n.nodeValue = drop;
    }
  };
  mend();
  new MutationObserver(mend).observe(document.body, { subtree: true, childList: true, characterData: true,
    attributes: true, attributeFilter: ["aria-label", "title"] }); }"""


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

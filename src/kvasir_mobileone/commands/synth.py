"""`kvasir synth`: the synthetic stand-in datasets (data/synth.py draws them)."""

from __future__ import annotations

import functools
from pathlib import Path

from kvasir_mobileone.data.synth import synth as write_synthetic


@functools.wraps(write_synthetic)
def synth(*args, **kwargs) -> Path:
    root = write_synthetic(*args, **kwargs)
    print(f"Synthetic images (not endoscopy images) in {root}")
    return root

"""`python -m kvasir_mobileone ...`: the `kvasir` command, for an environment where the package is on the path but
not installed (benchmarks/gpu_check.sh on an image that already has torch, timm and Lightning)."""

from kvasir_mobileone.cli import entry

entry()

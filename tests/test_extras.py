"""Each optional extra, when missing, is named in one line by the command that needs it, before any work."""

import sys

import pytest

from kvasir_mobileone.cli import main
from kvasir_mobileone.extras import EXTRAS, MissingExtraError

CASES = [  # (extra, the module it brings, a command that needs it)
    ("serve", "gradio", ["serve", "--model", "no-such-bundle"]),
    ("explain", "pytorch_grad_cam", ["serve", "--model", "no-such-bundle"]),
    ("label-issues", "cleanlab", ["label-issues", "no-such-cv-folder"]),
    ("explain", "pytorch_grad_cam", ["predict", "x.jpg", "--model", "no-such-bundle", "--explain", "true"]),
    ("explain", "captum", ["audit", "no-such-run"]),
]


@pytest.mark.parametrize(("extra", "module", "argv"), CASES, ids=[f"{c[0]}-{c[1]}-{c[2][0]}" for c in CASES])
def test_a_missing_extra_is_named_in_one_line(extra, module, argv, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError, as when it is not installed
    with pytest.raises(MissingExtraError) as caught:
        main(argv)
    message = str(caught.value)
    assert "\n" not in message
    assert f"optional extra '{extra}'" in message and f"pip install 'kvasir-mobileone[{extra}]'" in message
    assert module.split(".")[0] in message


def test_kornia_augmentation_names_the_gpu_extra(monkeypatch):
    from kvasir_mobileone.data.transforms import device_augmentations

    monkeypatch.setitem(sys.modules, "kornia.augmentation", None)
    with pytest.raises(MissingExtraError, match=r"optional extra 'gpu'"):
        device_augmentations()


def test_every_extra_is_in_pyproject_and_make_install_installs_them_all():
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(EXTRAS) <= set(extras)
    assert set(EXTRAS) <= set(extras["all"][0].split("[")[1].rstrip("]").split(","))
    assert '".[dev,all]"' in (root / "Makefile").read_text()


def test_every_module_of_the_package_imports_without_the_extras():
    """The core installs alone: no module imports an extra's package when it is imported, only when it is used (in
    a fresh interpreter where importing any extra's package fails)."""
    import subprocess
    from pathlib import Path

    package = Path(__file__).resolve().parents[1] / "src" / "kvasir_mobileone"
    blocked = [m for modules, _ in EXTRAS.values() for m in modules]
    names = [
        ".".join(("kvasir_mobileone", *p.relative_to(package).with_suffix("").parts))
        for p in sorted(package.rglob("*.py"))
        if p.name not in ("__init__.py", "__main__.py", "onnxruntime_example.py")
    ]
    code = f"import importlib, sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
    code += f"for name in {names!r}:\n    importlib.import_module(name)\nprint(len({names!r}))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == len(names) > 60

"""`kvasir serve` in a real browser (Playwright driving Debian's Chromium) and through gradio_client, and the model
card that every bundle carries."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

from kvasir_mobileone.cli import main

ON_CI = bool(os.environ.get("CI"))


def chromium() -> str:
    """Debian's Chromium (Playwright's own browser download is not possible here, nor behind many firewalls)."""
    found = os.environ.get("KVASIR_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        reason = "Chromium is not installed (apt-get install chromium); .ci/run installs it"
        if ON_CI:
            pytest.fail(reason)  # on CI a missing browser is a failure, never a skip
        pytest.skip(reason)
    return found


@pytest.fixture(scope="module")
def bundle(trained_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("serve_bundle")
    main(["test", str(trained_run), "--num_workers", "0"])  # the card's evaluation section comes from the report
    main(["export", str(trained_run), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def server(bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kvasir_mobileone.cli",
            "serve",
            "--model",
            str(bundle),
            "--port",
            str(port),
            "--max_file_mb",
            "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            assert process.poll() is None, process.stdout.read()
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def images(tiny_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("page_images")
    shutil.copy(next(tiny_data.glob("esophagitis/*.jpg")), folder / "frame.jpg")
    (folder / "notes.jpg").write_text("this is a text file named .jpg")
    (folder / "empty.jpg").write_bytes(b"")
    Image.new("1", (16000, 16000)).save(folder / "bomb.png")  # 256 Mpx in a few kB
    noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "big.png")  # 2.4 MB of noise: over the server's --max_file_mb 1
    return folder


def expected_top_class(bundle, image) -> str:
    return main(["predict", str(image), "--model", str(bundle)])[0]["top1"]


def test_the_page_in_a_browser(server, bundle, images, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    outside = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.on(
            "request", lambda r: outside.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None
        )
        page.goto(server)
        expect(page.locator("#card")).to_contain_text("not a medical device")
        page.locator("#images input[type=file]").set_input_files(str(images / "frame.jpg"))
        page.locator("#classify").click()
        expect(page.locator("#results")).to_contain_text(
            expected_top_class(bundle, images / "frame.jpg"), timeout=60_000
        )
        expect(page.locator("#heatmaps img").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "serve.png"), full_page=True)
        if os.environ.get("KVASIR_SCREENSHOT"):  # how the README's picture is made
            page.screenshot(path=os.environ["KVASIR_SCREENSHOT"], full_page=True)
        page.locator("#images button[aria-label='Clear']").first.click()
        page.locator("#images input[type=file]").set_input_files(str(images / "notes.jpg"))
        page.locator("#classify").click()
        expect(page.locator("#message")).to_contain_text("not an image that can be read", timeout=30_000)
        browser.close()
    assert (tmp_path / "serve.png").stat().st_size > 10_000
    assert not outside, f"the page fetched from outside 127.0.0.1: {outside}"


def test_the_page_through_gradio_client(server, bundle, images):
    from gradio_client import Client, handle_file

    client = Client(server, verbose=False)
    gallery, table, message = client.predict(
        [handle_file(str(images / f)) for f in ("frame.jpg", "notes.jpg", "empty.jpg", "bomb.png", "big.png")],
        api_name="/classify",
    )
    assert len(gallery) == 1 and table["data"][0][0] == "frame.jpg"
    assert table["data"][0][1] == expected_top_class(bundle, images / "frame.jpg")
    assert "notes.jpg**: not an image" in message and "empty.jpg**: the file is empty" in message
    assert "bomb.png**: refused: a decompression bomb" in message
    assert "big.png**: the file is 2.4 MB, over the 1 MB limit (--max_file_mb)" in message  # refused alone


def test_every_bundle_carries_a_model_card_and_loads_in_timm(bundle, trained_run):
    import yaml

    card = (bundle / "README.md").read_text()
    header = yaml.safe_load(card.split("---")[1])
    assert header["library_name"] == "timm" and header["license"] == "other" and "kvasir-v2" in header["datasets"]
    assert {"accuracy", "f1"} <= set(header["metrics"]) and "image-classification" in header["tags"]
    for section in (
        "## Intended use",
        "## Training data and preprocessing",
        "## Evaluation",
        "## Limitations",
        "## How to use",
        "Confusion matrix",
        "not a medical device",
        "Shortcut audit: none was run on this model",
    ):
        assert section in card, section
    config = json.loads((bundle / "config.json").read_text())
    assert config["architecture"] == "mobileone_s0" and config["pretrained_cfg"]["input_size"] == [3, 48, 48]
    model = timm.create_model(
        config["architecture"],
        pretrained=True,
        num_classes=config["num_classes"],
        pretrained_cfg_overlay=dict(file=str(bundle / "model_unfused.safetensors"), num_classes=config["num_classes"]),
    )
    ckpt = torch.load(trained_run / "checkpoints" / "best.ckpt", weights_only=True)["state_dict"]
    trained = {k.removeprefix("backbone."): v for k, v in ckpt.items() if k.startswith("backbone.")}
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in trained.items())  # every weight, the head included
    assert set(load_file(bundle / "model_unfused.safetensors")) == set(trained)

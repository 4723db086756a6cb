"""`kvasir benchmark` end to end at a tiny size: every figure is a ratio measured in the same run."""

import json

import pytest

from kvasir_mobileone.cli import main


@pytest.mark.slow
@pytest.mark.timeout(1500)  # every loader, training configuration and runtime, ExecuTorch lowering included
def test_benchmark_writes_side_by_side_ratios(tmp_path):
    main(
        [
            "benchmark",
            "--out",
            str(tmp_path),
            "--num_images",
            "80",
            "--num_workers",
            "0",
            "--train_models",
            "[mobileone_s0]",
            "--train_batch",
            "2",
            "--train_steps",
            "1",
            "--train_timeout_s",
            "120",
            "--inference_models",
            "[mobileone_s0]",
            "--inference_batches",
            "[1, 2]",
            "--check_images",
            "60",
            "--check_scale",
            "0.05",
            "--video_models",
            "[mobileone_s0]",
            "--video_seconds_per_class",
            "1.5",
            "--live_models",
            "[mobileone_s0]",
            "--live_rates",
            "[25, 60]",
            "--live_seconds_per_class",
            "0.5",
        ]
    )
    report = json.loads((tmp_path / "benchmark.json").read_text())
    assert report["matmul_gflops_fp32"] > 0 and report["machine"]["cores"] >= 1
    loaders = {r["loader"]: r for r in report["data"]}
    assert len(loaders) == 4 and all(r["images_per_s"] > 0 for r in loaders.values())
    naive = loaders["naive: full PIL decode + float transforms"]["images_per_s"]
    assert all(r["speedup_vs_naive"] == pytest.approx(r["images_per_s"] / naive) for r in loaders.values())
    assert len(report["training"]) == 4 and {r["precision"] for r in report["training"]} == {"fp32", "bf16 autocast"}
    # the plain layouts train on any CPU; channels_last in fp32 makes oneDNN abort on some (README, Speed): such a
    # configuration is reported with why it has no speed, never fatal and never silent
    ran = {(r["precision"], r["channels_last"]): r for r in report["training"]}
    assert ran["fp32", False]["images_per_s"] and ran["bf16 autocast", False]["images_per_s"]
    fp32 = ran["fp32", False]["images_per_s"]
    markdown = (tmp_path / "benchmark.md").read_text()
    for r in report["training"]:
        if r["images_per_s"]:
            assert r["speedup_vs_fp32"] == pytest.approx(r["images_per_s"] / fp32) and not r["error"]
        else:
            assert r["speedup_vs_fp32"] is None and r["error"].startswith(("process died", "no step within"))
            assert r["error"] in markdown
    runtimes = {(r["batch"], r["runtime"]) for r in report["inference"]}
    assert len(runtimes) == 14 and all(r["images_per_s"] > 0 for r in report["inference"])
    executorch = sorted(r for _, r in runtimes if r.startswith("fused ExecuTorch XNNPACK"))
    assert [r.split(" (")[0] for r in executorch] == ["fused ExecuTorch XNNPACK fp32"] * 2 + [
        "fused ExecuTorch XNNPACK int8"
    ] * 2
    for r in report["inference"]:  # every ratio is this run's own, side by side
        same = [o for o in report["inference"] if o["batch"] == r["batch"]]
        fp32 = next(o for o in same if o["runtime"] == "fused onnxruntime fp32")["images_per_s"]
        assert r["speedup_vs_ort_fp32"] == pytest.approx(r["images_per_s"] / fp32)
    assert "× naive" in (tmp_path / "benchmark.md").read_text()
    checks = report["check"]
    assert [r["check"] for r in checks] == ["official split, empty cache", "official split, cached", "manifest, cached"]
    assert len({r["images"] for r in checks}) == 1 and checks[0]["images"] >= 46  # every class at least 2 images
    assert all(r["speedup_vs_cold"] == pytest.approx(checks[0]["seconds"] / r["seconds"]) for r in checks)
    video = report["video"]  # predict VIDEO end to end on 1080p, each row's real-time factor its own
    assert [(r["model"], r["precision"]) for r in video][1:] == [("mobileone_s0", "fp32"), ("mobileone_s0", "int8")]
    # every frame, decoded and classified: 4 classes x 1.5 s and 3 changes x 0.6 s at 25 fps
    assert len({r["frames"] for r in video}) == 1 and video[0]["frames"] == 195
    assert all(r["realtime_factor"] == pytest.approx(195 / 25 / r["seconds"]) for r in video)
    assert "1920x1080 h264 25 fps" in video[0]["video"] and "× real time" in (tmp_path / "benchmark.md").read_text()
    # `kvasir watch` itself at 25 and 60 fps: every frame seen (4 classes x 0.5 s, 3 changes x 0.6 s), each either
    # classified or skipped, the latency of those classified, and the verdict against the frame interval its own
    live = report["live"]
    assert [(r["fps"], r["precision"]) for r in live] == [(25, "fp32"), (25, "int8"), (60, "fp32"), (60, "int8")]
    for r in live:
        assert r["frames_seen"] == round(3.8 * r["fps"]) and 0 < r["frames_classified"] <= r["frames_seen"]
        assert r["classified_share"] == pytest.approx(r["frames_classified"] / r["frames_seen"])
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] <= r["latency_max_ms"]
        assert r["p95_within_a_frame"] == (r["latency_p95_ms"] <= 1000 / r["fps"])
        assert r["stopped"] == "the stream ended"
    assert "## Live" in (tmp_path / "benchmark.md").read_text()

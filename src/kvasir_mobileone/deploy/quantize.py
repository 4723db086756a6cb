"""INT8 post-training quantization of a fused ONNX model with onnxruntime's tools (pre-processing, QDQ format,
static calibration on training images), and the check that decides whether the int8 model may be shipped.

Reparameterized (RepVGG-style) networks are known to lose accuracy under naive quantization: the folded branches
give outlier weights. So several calibrations are measured, the most sensitive layers (worst weight
signal-to-quantization-noise ratio, onnxruntime's QDQ debugging tools) can stay in fp32. The int8 model is written
unless the test images show a loss (`int8_verdict`): a paired interval and McNemar's test decide, never a raw
agreement rate that one image can cross."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from tqdm import tqdm

from kvasir_mobileone.deploy.latency import latency_ms
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.evaluation.intervals import paired_difference
from kvasir_mobileone.evaluation.stats import matched_pairs_interval
from kvasir_mobileone.images import ModelInput

# name -> quantize_static settings. "percentile" clips the 0.01% most extreme activations.
CONFIGS = {
    "minmax": {"per_channel": False, "method": "MinMax"},
    "minmax-per-channel": {"per_channel": True, "method": "MinMax"},
    "percentile-per-channel": {"per_channel": True, "method": "Percentile"},
    "entropy-per-channel": {"per_channel": True, "method": "Entropy"},
}
DEFAULT_CONFIG = "minmax-per-channel"  # kept accuracy best among the four (README, INT8), see `--int8_search`
DEFAULT_FP32_LAYERS = 0  # measured: keeping the worst-SQNR layers in fp32 did not raise agreement (README)


class Batches:
    """onnxruntime's CalibrationDataReader over a float32 NCHW array, a few images at a time."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 16):
        self.images, self.input_name, self.batch_size, self.position = images, input_name, batch_size, 0

    def get_next(self):
        if self.position >= len(self.images):
            return None
        batch = self.images[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return {self.input_name: batch}

    def rewind(self):
        self.position = 0


def preprocess(fp32_path: Path, out_path: Path) -> Path:
    """onnxruntime's quantization pre-processing: shape inference and graph optimization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(fp32_path), str(out_path), skip_symbolic_shape=True)
    return out_path


def quantize(
    prepared: Path, out_path: Path, calibration: np.ndarray, input_name: str, config: str, fp32_nodes: list[str] = ()
) -> Path:
    """Static int8 quantization in QDQ format: uint8 activations, int8 weights (onnxruntime's advice for x86)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    settings = CONFIGS[config]
    quantize_static(
        str(prepared),
        str(out_path),
        Batches(calibration, input_name),
        quant_format=QuantFormat.QDQ,
        per_channel=settings["per_channel"],
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=getattr(CalibrationMethod, settings["method"]),
        nodes_to_exclude=list(fp32_nodes),
        extra_options={"CalibPercentile": 99.99} if settings["method"] == "Percentile" else None,
    )
    return out_path


def most_sensitive_nodes(prepared: Path, quantized: Path, count: int) -> list[str]:
    """The `count` nodes whose weights lose most in quantization (lowest signal-to-quantization-noise ratio)."""
    import onnx
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error, create_weight_matching

    if count <= 0:
        return []
    sqnr = compute_weight_error(create_weight_matching(str(prepared), str(quantized)))
    owner = {name: node.name for node in onnx.load(str(prepared)).graph.node for name in node.input[1:2]}
    ranked = sorted((value, owner[w]) for w, value in sqnr.items() if w in owner)
    return [node for _, node in ranked[:count]]


def session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def logits(sess, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    name = sess.get_inputs()[0].name
    return np.concatenate(
        [sess.run(None, {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    )


def session_logits(sess):
    """An onnxruntime session as a function of its one input (what runtime.latency_ms times)."""
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})[0]


def check(fp32_logits: np.ndarray, int8_logits: np.ndarray, targets: np.ndarray | None) -> dict:
    """Top-1 agreement with fp32; with labels, the accuracy and macro-F1 change (paired BCa interval, McNemar)."""
    fp32_pred, int8_pred = fp32_logits.argmax(axis=1), int8_logits.argmax(axis=1)
    result = {
        "images": int(len(fp32_pred)),
        "top1_agreement": float(np.mean(fp32_pred == int8_pred)),
        "max_logit_diff": float(np.abs(fp32_logits - int8_logits).max()),
    }
    if targets is not None:
        diff = paired_difference(targets, int8_pred, fp32_pred)  # A = int8, B = fp32: negative is a loss
        result |= {
            "accuracy_fp32": float(np.mean(fp32_pred == targets)),
            "accuracy_int8": float(np.mean(int8_pred == targets)),
            "accuracy_change": diff["accuracy_difference"],
            # the verdict's interval: exact enough with a handful of changed answers, where a bootstrap is not
            "accuracy_change_ci": matched_pairs_interval(diff["only_a_correct"], diff["only_b_correct"], len(targets)),
            "accuracy_change_ci_method": "95%, Agresti-Min adjusted Wald for matched pairs",
            "f1_macro_change": diff["f1_macro_difference"],
            "f1_macro_change_ci": diff["f1_macro_difference_ci"],
            "mcnemar_p": diff["p_value"],
            "int8_only_right": diff["only_a_correct"],
            "fp32_only_right": diff["only_b_correct"],
        }
    return result


def build_int8(
    fp32_path: Path,
    out_path: Path,
    calibration: np.ndarray,
    test_images: np.ndarray,
    targets: np.ndarray | None,
    config: str = DEFAULT_CONFIG,
    fp32_layers: int = DEFAULT_FP32_LAYERS,
) -> dict:
    """Quantize, keep the most sensitive layers in fp32, check on the test images; write out_path, return figures."""
    input_name = session(fp32_path).get_inputs()[0].name
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:  # same file system: the final rename is atomic
        prepared = preprocess(fp32_path, Path(tmp) / "prepared.onnx")
        first = quantize(prepared, Path(tmp) / "all_int8.onnx", calibration, input_name, config)
        kept = most_sensitive_nodes(prepared, first, fp32_layers)
        final = quantize(prepared, Path(tmp) / "int8.onnx", calibration, input_name, config, kept) if kept else first
        fp32_sess, int8_sess = session(fp32_path), session(final)
        figures = check(logits(fp32_sess, test_images), logits(int8_sess, test_images), targets)
        shape = (1, *test_images.shape[1:])
        figures |= {
            "config": config,
            "fp32_layers": kept,
            "calibration_images": int(len(calibration)),
            "fp32_ms_batch1": latency_ms(session_logits(fp32_sess), shape),
            "int8_ms_batch1": latency_ms(session_logits(int8_sess), shape),
        }
        figures["speedup_batch1"] = figures["fp32_ms_batch1"] / figures["int8_ms_batch1"]
        final.replace(out_path)
    return figures


class Int8Refused(UserError):
    """The int8 model lost more than the threshold; it was not written."""


def network_inputs(paths: list[Path], model_input: ModelInput) -> np.ndarray:
    return np.stack([model_input.read(p)[0] for p in tqdm(paths, desc="int8 images", unit="img")])


class Int8Images:
    """What every int8 model of a run is built and judged on: calibration images drawn from the training split
    (never test images, seeded), the test images and their labels."""

    def __init__(self, trained, calibration_images: int):
        if trained.run is None:
            raise UserError("INT8 needs the run folder: its training images calibrate, its test images check.")
        rows, _ = trained.manifest_rows()
        data_dir = trained.data_dir()
        train = [r for r in rows if r["split"] == "train"]
        chosen = np.random.default_rng(0).choice(len(train), min(calibration_images, len(train)), replace=False)
        self.calibration_paths = [train[i]["path"] for i in sorted(chosen)]
        test_rows = [r for r in rows if r["split"] == "test"]
        model_input = trained.model_input
        self.calibration = network_inputs([data_dir / p for p in self.calibration_paths], model_input)
        self.test = network_inputs([data_dir / r["path"] for r in test_rows], model_input)
        class_index = {c: i for i, c in enumerate(trained.module.class_names)}
        self.targets = np.array([class_index[r["label"]] for r in test_rows])

    def provenance(self) -> dict:
        return {"calibration_split": "train", "calibration_paths": self.calibration_paths}


def int8_for_run(
    images: Int8Images,
    fp32_path: Path,
    out_path: Path,
    config: str,
    fp32_layers: int,
    max_accuracy_drop: float,
    force: bool,
    search: bool,
) -> dict:
    """The ONNX int8 model: calibrated on the run's training images, checked on its test images, and written to
    out_path only when it keeps the accuracy (or with force)."""
    searched = {}
    for name in CONFIGS if search else [config]:
        candidate = out_path.with_name(f".{name}.int8.onnx")
        searched[name] = build_int8(
            fp32_path, candidate, images.calibration, images.test, images.targets, name, fp32_layers
        )
    best = max(searched, key=lambda n: (searched[n]["top1_agreement"], searched[n]["accuracy_change"]))
    figures = searched[best] | images.provenance()
    if search:
        figures["search"] = {
            n: {k: f[k] for k in ("top1_agreement", "accuracy_change", "int8_ms_batch1")} for n, f in searched.items()
        }
    for name in searched:
        if name != best:
            out_path.with_name(f".{name}.int8.onnx").unlink(missing_ok=True)
    return accept(figures, out_path.with_name(f".{best}.int8.onnx"), out_path, max_accuracy_drop, force)


def accept(figures: dict, candidate: Path, out_path: Path, max_accuracy_drop: float, force: bool) -> dict:
    """Move the int8 candidate to out_path when `decide` accepts it; delete it and re-raise when it refuses."""
    try:
        figures = decide(figures, max_accuracy_drop, force)
    except Int8Refused:
        candidate.unlink(missing_ok=True)
        raise
    candidate.replace(out_path)
    return figures


def decide(figures: dict, max_accuracy_drop: float, force: bool) -> dict:
    """The figures with the verdict, the reason, `accepted` and a one-line summary; Int8Refused when the verdict is
    "refused" and not `force`."""
    figures = figures | int8_verdict(figures, max_accuracy_drop)
    figures["accepted"] = figures["verdict"] != "refused" or force
    figures["forced"] = figures["verdict"] == "refused" and force
    figures["summary"] = (
        f"int8 ({figures['config']}, {len(figures['fp32_layers'])} layers kept in fp32) on {figures['images']} test "
        f"images: {figures['verdict']}{' (written with --force)' if figures['forced'] else ''}: {figures['reason']}. "
        f"Top-1 agreement with fp32 {100 * figures['top1_agreement']:.2f}%, accuracy "
        f"{100 * figures['accuracy_fp32']:.2f}% -> {100 * figures['accuracy_int8']:.2f}%; "
        f"{figures['fp32_ms_batch1']:.2f} -> {figures['int8_ms_batch1']:.2f} ms at batch 1"
    )
    if not figures["accepted"]:
        raise Int8Refused(
            f"Refused to write the int8 model: {figures['summary']}. Try --int8_search true or more --fp32_layers; "
            "--force true writes it anyway. The fp32 bundle is complete."
        )
    return figures


def int8_verdict(figures: dict, max_accuracy_drop: float, alpha: float = 0.05) -> dict:
    """{verdict, reason} from the paired accuracy change (int8 − fp32) on the test images:

    - "refused" when the data show a loss: the whole 95% interval lies below −max_accuracy_drop, or McNemar's exact
      test finds significantly more images that only fp32 gets right (p < alpha);
    - "certified" when the interval's lower bound is above −max_accuracy_drop (a larger loss is ruled out);
    - "not certified" otherwise: no loss shown, none ruled out (too few test images); the model is written.
    Agreement with fp32 is reported beside it, not used: on 47 images one changed answer is 2 points."""
    change, (low, high) = figures["accuracy_change"], figures["accuracy_change_ci"]
    limit = f"{100 * max_accuracy_drop:.1f} points (--max_accuracy_drop)"
    interval = f"accuracy change {100 * change:+.2f} points, 95% CI [{100 * low:+.2f}, {100 * high:+.2f}]"
    mcnemar = (
        f"McNemar p = {figures['mcnemar_p']:.3g} ({figures['fp32_only_right']} images right only in fp32, "
        f"{figures['int8_only_right']} only in int8)"
    )
    if high < -max_accuracy_drop:
        return {"verdict": "refused", "reason": f"a loss of more than {limit}: {interval}; {mcnemar}"}
    if figures["mcnemar_p"] < alpha and figures["fp32_only_right"] > figures["int8_only_right"]:
        return {"verdict": "refused", "reason": f"significantly more images right only in fp32: {mcnemar}; {interval}"}
    if low > -max_accuracy_drop:
        return {"verdict": "certified", "reason": f"a loss of more than {limit} is ruled out: {interval}; {mcnemar}"}
    return {
        "verdict": "not certified",
        "reason": f"too few test images to rule out a loss of more than {limit}: {interval}; {mcnemar}",
    }

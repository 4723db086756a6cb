"""The training recipe's ingredients (issue: a mobile model that reaches the literature): an EMA of the weights that
is what gets validated, tested and exported; Mixup/CutMix with soft targets; stochastic depth; RandAugment; a
teacher whose answers reach the loss on the very images the student sees; unlabeled frames checked and counted."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fitflags import fit_flags, fit_run
from kvasir_mobileone.cli import main
from kvasir_mobileone.data.config import DataConfig
from kvasir_mobileone.data.datamodule import ImageFolderDataModule
from kvasir_mobileone.data.folder import DataError
from kvasir_mobileone.data.synth import KVASIR_CLASSES
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.io import file_sha256 as sha256
from kvasir_mobileone.io import read_csv
from kvasir_mobileone.models.classifier import Classifier
from kvasir_mobileone.models.distill import distillation_loss
from kvasir_mobileone.models.loading import load_teacher, open_run
from kvasir_mobileone.models.optim import ModelConfig
from kvasir_mobileone.runs import read_checkpoint

CLASSES = list(KVASIR_CLASSES[:4])  # tiny_data's (conftest.py)


def test_the_ema_weights_are_the_ones_validated_tested_and_exported(tiny_data, tmp_path):
    """best.ckpt's state_dict is the average (the trained weights beside it, for --resume); the test report's
    probabilities are the average's, and so are the exported model's logits, not the trained weights'."""
    run = fit_run(tiny_data, tmp_path, "ema", "--model.ema", "0.6", flags=fit_flags(epochs=3))
    ckpt = read_checkpoint(run / "checkpoints" / "best.ckpt")
    assert "current_model_state" in ckpt, "no weight average in the checkpoint"
    averaged, trained = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(averaged[k], trained[k]) for k in averaged if k.endswith("weight"))
    model = open_run(str(run))
    current = Classifier.from_checkpoint(run / "checkpoints" / "best.ckpt")
    current.load_state_dict(trained)
    rows = [r for r in read_csv(run / "test" / "predictions.csv")]
    x = np.stack([model.model_input.read(tiny_data / r["path"])[0] for r in rows])
    with torch.no_grad():
        ema_probs = model.module(torch.from_numpy(x)).softmax(1).numpy()
        trained_probs = current.eval()(torch.from_numpy(x)).softmax(1).numpy()
    reported = np.array([[float(r[f"p_{c}"]) for c in CLASSES] for r in rows])
    assert np.abs(reported - ema_probs).max() < 1e-4  # the test at the end of fit tested the average
    assert np.abs(reported - trained_probs).max() > 1e-3
    bundle = tmp_path / "bundle"
    main(["export", str(run), "--out", str(bundle)])
    import onnxruntime as ort

    exported = ort.InferenceSession(str(bundle / "model.onnx")).run(None, {"image": x})[0]
    with torch.no_grad():
        expected = model.module(torch.from_numpy(x)).numpy()
    assert np.abs(exported - expected).max() < 1e-3 * np.abs(expected).max()
    assert "EMA of the weights, decay 0.6" in (bundle / "README.md").read_text()  # the card says how it was trained
    from kvasir_mobileone.models.trainer import ema_with_warmup

    average = ema_with_warmup(0.999)  # warms up: the first updates move the average most of the way
    zero, one = torch.zeros(1), torch.ones(1)
    assert average(zero, one, torch.tensor(0)).item() == pytest.approx(0.9)
    assert average(zero, one, torch.tensor(10**6)).item() == pytest.approx(0.001)
    with pytest.raises(UserError, match=r"--model.ema 1.0: the average's decay is in \[0, 1\)"):
        ModelConfig(ema=1.0)


def test_mixup_and_cutmix_targets_are_soft_and_the_loss_learns_them(tiny_data, resnet_run):
    """timm's Mixup/CutMix on a training batch: rows of soft targets that sum to 1, mixed images; an odd batch's
    last image passes as it is; the training loss is the cross-entropy of the mixed images to the soft targets."""
    torch.manual_seed(0)
    module = Classifier(CLASSES, ModelConfig(name="resnet10t", pretrained=False, mixup=0.8, cutmix=1.0))
    trained = open_run(str(resnet_run))  # a network that tells the images apart: mixing them changes its loss
    module.backbone.load_state_dict(trained.module.backbone.state_dict())
    rows = [r for r in read_csv(resnet_run / "split_manifest.csv") if r["split"] == "test"]
    chosen = [next(r for r in rows if r["label"] == c) for c in CLASSES] + [rows[-1]]
    images = torch.from_numpy(np.stack([trained.model_input.read(tiny_data / r["path"])[0] for r in chosen]))
    targets = torch.tensor([CLASSES.index(r["label"]) for r in chosen])
    np.random.seed(0)
    mixed, soft = module.mix(images.clone(), targets)
    assert soft.shape == (5, 4) and torch.allclose(soft.sum(1), torch.ones(5))
    assert (soft[:4].max(1).values < 1).all() and (soft[:4] > 0).sum(1).min() == 2  # every pair mixed
    assert torch.equal(soft[4], F.one_hot(targets[4], 4).float()) and torch.equal(mixed[4], images[4])
    assert not torch.equal(mixed[:4], images[:4])
    module.train()
    np.random.seed(0), torch.manual_seed(0)  # lam 0.53 here: a mix, not one image
    loss = module._shared_step((images.clone(), targets, torch.arange(5)), "train")
    np.random.seed(0), torch.manual_seed(0)  # lam 0.53: a mix, not one image
    x, y = module.mix(images.clone(), targets)
    assert loss.item() == pytest.approx(F.cross_entropy(module(x), y).item(), rel=1e-5)
    unmixed = F.cross_entropy(module(images), targets).item()
    assert abs(loss.item() - unmixed) > 0.05, (loss.item(), unmixed)  # the mixing changes what is learned
    plain = Classifier(CLASSES, ModelConfig(name="resnet10t", pretrained=False))
    assert plain.mixer is None


def test_drop_path_and_randaugment_are_switched_on_where_asked(tiny_data, resnet_run):
    drops = [
        m.drop_prob
        for m in Classifier(CLASSES, ModelConfig(name="resnet10t", pretrained=False, drop_path=0.2)).modules()
        if type(m).__name__ == "DropPath"
    ]
    assert drops and max(drops) == pytest.approx(0.2)
    from kvasir_mobileone.images import ModelInput

    rows = read_csv(resnet_run / "split_manifest.csv")
    model_input = ModelInput(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    data = DataConfig(data_dir=str(tiny_data), augment="randaugment", augment_on="workers", cache=False)
    augment = ImageFolderDataModule(data, rows, model_input).dataset("train").augment
    assert type(augment.transforms[0]).__name__ == "RandAugment"
    from kvasir_mobileone.data.unlabeled import UnlabeledFrames

    on_device = ImageFolderDataModule(
        DataConfig(data_dir=str(tiny_data), augment_on="device", cache=False), rows, model_input
    )
    on_device.unlabeled = UnlabeledFrames(tiny_data, 1, [{"path": rows[0]["path"], "label": "", "split": "unlabeled"}])
    assert on_device.unlabeled_loader(2).dataset.augment is None  # augmented on the device, with the labeled batch
    with pytest.raises(DataError, match="--data.augment randaugment runs in the DataLoader workers"):
        device = DataConfig(data_dir=str(tiny_data), augment="randaugment", augment_on="device", cache=False)
        ImageFolderDataModule(device, rows, model_input)


def test_the_teachers_answers_on_the_students_images_reach_the_loss(resnet_run):
    """The teacher (a run at 32 px) answers the student's batch (48 px) in its own input; with distill_weight 1 the
    training loss is the distillation term alone, and another teacher gives another loss."""
    torch.manual_seed(0)
    config = ModelConfig(name="resnet10t", pretrained=False, distill_weight=1.0, distill_temperature=2.0)
    student = Classifier(CLASSES, config).train()
    teacher = load_teacher(str(resnet_run), None, CLASSES)
    assert teacher.record.image_size == 32 and teacher.record.sha256 == sha256(resnet_run / "checkpoints/best.ckpt")
    student.teacher = teacher
    images, targets = torch.randn(4, 3, 48, 48), torch.tensor([0, 1, 2, 3])
    assert teacher.teacher_batch(images, student.model_input).shape == (4, 3, 32, 32)
    loss = student._shared_step((images, targets, torch.arange(4)), "train")
    expected = distillation_loss(student(images), teacher.logits(images, student.model_input), 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # with unlabeled frames: the labeled loss, and the teacher's answers on the frames at distill_weight
    frames = torch.randn(6, 3, 48, 48)
    batch = {
        "labeled": (images, targets, torch.arange(4)),
        "unlabeled": (frames, torch.zeros(6).long(), torch.arange(6)),
    }
    total = student.training_step(batch, 0)
    on_frames = distillation_loss(student(frames), teacher.logits(frames, student.model_input), 2.0)
    assert total.item() == pytest.approx(loss.item() + on_frames.item(), rel=1e-5)
    other = load_teacher(str(resnet_run), None, CLASSES)
    torch.nn.init.normal_(other.network.get_classifier().weight)
    student.teacher = other
    assert student._shared_step((images, targets, torch.arange(4)), "train").item() != pytest.approx(loss.item())
    with pytest.raises(UserError, match="a teacher must know the same classes in the same order"):
        load_teacher(str(resnet_run), None, CLASSES[::-1])
    with pytest.raises(UserError, match="give its weights for these classes with --model.teacher_weights"):
        load_teacher("convnext_tiny", None, CLASSES)


def test_a_teacher_named_by_timm_loads_its_weights_head_included(resnet_run, tmp_path):
    """--model.teacher NAME --model.teacher_weights FILE: the file's head is the teacher's (not a fresh one), so it
    answers as the run it came from; a file of another shape is refused, named."""
    from safetensors.torch import save_file

    from_run = load_teacher(str(resnet_run), None, CLASSES)
    weights = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in from_run.network.state_dict().items()}, str(weights))
    by_name = load_teacher("resnet10t", str(weights), CLASSES)
    images = torch.randn(3, 3, 32, 32)
    with torch.no_grad():  # the same network (its own input is timm's default size, not the run's 32 px)
        assert torch.allclose(by_name.network(images), from_run.network(images), atol=1e-5)
    assert by_name.record.sha256 == sha256(weights) and by_name.record.name == "resnet10t"
    with pytest.raises(UserError, match="not the weights of a resnet18 with a 4-class head"):
        load_teacher("resnet18", str(weights), CLASSES)


def test_unlabeled_frames_are_checked_counted_and_learn_the_teachers_answers(
    tiny_data, resnet_run, tmp_path, monkeypatch
):
    """A fit with a teacher and a folder of unlabeled frames: an unreadable frame and a copy of a test image are
    left out and listed, the others counted as used; the unlabeled term is logged; without a teacher, refused."""
    import shutil

    rows = read_csv(resnet_run / "split_manifest.csv")
    unlabeled = tmp_path / "unlabeled" / "day1"
    unlabeled.mkdir(parents=True)
    train = [r["path"] for r in rows if r["split"] == "train"][:12]
    for k, path in enumerate(train):  # training images under other names: allowed (no leak)
        shutil.copy(tiny_data / path, unlabeled / f"frame_{k:03d}.jpg")
    test_image = next(r["path"] for r in rows if r["split"] == "test")
    shutil.copy(tiny_data / test_image, unlabeled / "copy_of_a_test_image.jpg")
    (unlabeled / "broken.jpg").write_bytes(b"not a jpeg")
    flags = fit_flags(epochs=1, logger="csv") + ["--data.manifest", str(resnet_run / "split_manifest.csv")]
    monkeypatch.chdir(resnet_run.parent)  # the teacher named relative to here: the run records it absolute
    extra = ["--model.teacher", resnet_run.name, "--data.unlabeled_dir", str(tmp_path / "unlabeled")]
    run = fit_run(tiny_data, tmp_path / "runs", "student", *extra, "--test_after", "false", flags=flags)
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["teacher"] == str(resnet_run.resolve())
    info = json.loads((run / "model_info.json").read_text())
    assert info["teacher"]["sha256"] == sha256(resnet_run / "checkpoints/best.ckpt")
    assert info["unlabeled"]["found"] == 14 and info["unlabeled"]["used"] == 12
    assert info["unlabeled"]["left_out"] == {"unreadable": 1, "near-duplicate of a val or test image": 1}
    left = {r["path"]: r["reason"] for r in read_csv(run / "unlabeled_left_out.csv")}
    assert left["day1/broken.jpg"].startswith("unreadable")
    assert left["day1/copy_of_a_test_image.jpg"].startswith(f"near-duplicate of {test_image}")
    logged = read_csv(run / "csv_logs" / "metrics.csv")
    assert any(r.get("train/unlabeled_distill_loss") for r in logged) and any(
        r.get("train/distill_loss") for r in logged
    )
    main(["export", str(run), "--out", str(tmp_path / "bundle")])  # the model card names the teacher and frames
    card = (tmp_path / "bundle" / "README.md").read_text()
    assert f"distilled from `resnet10t` (`{resnet_run.resolve()}`, SHA-256 `{info['teacher']['sha256']}`" in card
    assert "and on 12 unlabeled frames (of 14 found)" in card
    with pytest.raises(UserError, match="--data.unlabeled_dir needs --model.teacher"):
        fit_run(tiny_data, tmp_path / "runs", "alone", "--data.unlabeled_dir", str(tmp_path / "unlabeled"), flags=flags)
    assert not (tmp_path / "runs" / "alone").exists()  # refused before a run folder is made


@pytest.mark.slow
def test_the_recipe_trains_on_the_resident_loader_and_compiled(tiny_data, resnet_run, tmp_path):
    """EMA, Mixup/CutMix, drop path and a teacher live in the module: they train on the GPU path's resident batches
    (on the CPU here) with the backbone compiled; what runs only in the workers (RandAugment, unlabeled frames)
    is refused there, named."""
    flags = fit_flags(epochs=2) + ["--data.manifest", str(resnet_run / "split_manifest.csv")]
    recipe = ["--model.ema", "0.9", "--model.mixup", "0.2", "--model.cutmix", "1.0", "--model.drop_path", "0.1"]
    recipe += ["--model.teacher", str(resnet_run), "--data.loader", "resident", "--data.augment_on", "device"]
    run = fit_run(tiny_data, tmp_path / "runs", "resident", *recipe, "--trainer.compile", "default", flags=flags)
    assert "current_model_state" in read_checkpoint(run / "checkpoints" / "best.ckpt")
    assert json.loads((run / "test" / "metrics.json").read_text())["n"] > 0
    assert json.loads((run / "model_info.json").read_text())["teacher"]["name"] == "resnet10t"
    with pytest.raises(DataError, match="--data.augment randaugment runs in the DataLoader workers"):
        fit_run(
            tiny_data,
            tmp_path / "runs",
            "ra",
            "--data.loader",
            "resident",
            "--data.augment",
            "randaugment",
            flags=flags,
        )
    with pytest.raises(DataError, match="--data.unlabeled_dir reads its frames in the loader's workers"):
        fit_run(
            tiny_data,
            tmp_path / "runs",
            "unlabeled",
            *("--data.loader", "resident", "--model.teacher", str(resnet_run), "--data.unlabeled_dir", str(tiny_data)),
            flags=flags,
        )

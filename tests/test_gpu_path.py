"""The GPU path's logic on CPU tensors (issue 14): batched augmentation semantics against torchvision, the
resident batches, placement and its fallback, learning-rate scaling, compile, the GPU defaults, and the same
accuracy as the workers path."""

import dataclasses
import json
import shutil

import lightning as L
import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from fitflags import fit_flags
from kvasir_mobileone.bench.gpu import (
    CURRENT,
    compile_cost,
    copy_bandwidth_gbs,
    kvasir_sized_rows,
    measure,
    profile_summary,
)
from kvasir_mobileone.bench.gpu_report import render_gpu
from kvasir_mobileone.cli import main
from kvasir_mobileone.data import batch_augment as B
from kvasir_mobileone.data import datamodule as dataset_module
from kvasir_mobileone.data.cache import build_cache
from kvasir_mobileone.data.datamodule import DataConfig, ImageFolderDataModule, auto_loader
from kvasir_mobileone.data.folder import DataError, scan_image_folder
from kvasir_mobileone.data.regions import mask_pixels
from kvasir_mobileone.data.resident import DEVICE_SHARE, ImageBank, ResidentBatches, placement
from kvasir_mobileone.data.split import make_split
from kvasir_mobileone.evaluation.stats import matched_pairs_interval
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.models import trainer as trainer_module
from kvasir_mobileone.models.backbone import model_input_for
from kvasir_mobileone.models.classifier import Classifier, ModelConfig
from kvasir_mobileone.models.optim import build_lr_scheduler, build_optimizer, scaled_lr, warmup_epochs
from kvasir_mobileone.runs import read_checkpoint

NORM = ModelInput(24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
bilinear = TF.InterpolationMode.BILINEAR


def smooth_images(n: int, height: int = 40, width: int = 40) -> torch.Tensor:
    """Random but smooth [0, 1] images: bilinear resampling then differs from torchvision's only by rounding."""
    torch.manual_seed(0)
    noise = torch.rand(n, 3, height + 8, width + 8)
    return torch.nn.functional.avg_pool2d(noise, 9, 1, 4)[:, :, 4:-4, 4:-4].contiguous()


@pytest.mark.parametrize(
    ("ours", "theirs", "factors"),
    [
        (B.adjust_brightness, TF.adjust_brightness, [0.8, 1.0, 1.2, 0.9]),
        (B.adjust_contrast, TF.adjust_contrast, [0.8, 1.0, 1.2, 0.9]),
        (B.adjust_saturation, TF.adjust_saturation, [0.8, 1.0, 1.2, 0.9]),
        (B.adjust_hue, TF.adjust_hue, [-0.02, 0.01, 0.0, 0.02]),
    ],
)
def test_each_colour_jitter_matches_torchvision_image_by_image(ours, theirs, factors):
    images = ((smooth_images(4) - 0.5) * 5 + 0.5).clamp(0, 1)  # contrast stretched: the clamps matter
    batched = ours(images.clone(), torch.tensor(factors))
    one_by_one = torch.stack([theirs(images[i], f) for i, f in enumerate(factors)])
    assert torch.allclose(batched, one_by_one, atol=1e-5)
    assert not torch.allclose(batched[0], images[0], atol=1e-3)  # a factor that is not 1 changed the image


def test_flips_and_rotation_are_torchvision_s():
    images = smooth_images(4)
    no_angle = torch.zeros(4)
    flip_x, flip_y = torch.tensor([True, False, True, False]), torch.tensor([False, False, True, True])
    flipped = B.affine_flip_rotate(images, no_angle, flip_x, flip_y)
    expected = torch.stack([images[0].flip(-1), images[1], images[2].flip(-1).flip(-2), images[3].flip(-2)])
    assert torch.allclose(flipped, expected, atol=1e-5)
    degrees = torch.tensor([10.0, -15.0, 5.0, 14.0])
    none = torch.zeros(4, dtype=torch.bool)
    rotated = B.affine_flip_rotate(images, degrees, none, none)
    reference = torch.stack(
        [TF.rotate(images[i], float(d), TF.InterpolationMode.BILINEAR) for i, d in enumerate(degrees)]
    )
    assert torch.allclose(rotated, reference, atol=1e-4)  # black corners included
    wide = smooth_images(2, 30, 50)  # not square: the rotation stays rigid in pixels
    rotated = B.affine_flip_rotate(wide, torch.tensor([10.0, -7.0]), none[:2], none[:2])
    reference = torch.stack([TF.rotate(wide[i], d, bilinear) for i, d in enumerate([10.0, -7.0])])
    assert torch.allclose(rotated, reference, atol=1e-4)


def test_batch_augment_is_random_per_image_and_seeded():
    images = smooth_images(1).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    augment = B.BatchAugment()
    out = augment(images, torch.Generator().manual_seed(3))
    assert out.shape == images.shape and out.min() >= 0 and out.max() <= 1
    assert all(not torch.allclose(out[0], out[k], atol=1e-3) for k in range(1, 6))  # each copy drew its own
    again = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)


def test_placement_falls_back_to_pinned_host_memory_when_the_images_do_not_fit():
    gpu = torch.device("cuda")
    free = 10_000
    assert placement(int(DEVICE_SHARE * free), gpu, free) == "device"
    assert placement(int(DEVICE_SHARE * free) + 1, gpu, free) == "pinned"
    assert placement(10**12, torch.device("cpu")) == "host"


@pytest.mark.gpu
@pytest.mark.parametrize("free_bytes", [None, 1], ids=["device", "pinned"])
def test_the_resident_bank_on_a_gpu_serves_the_host_banks_batches(tiny_data, free_bytes):
    """The branches a CPU cannot run: the bank in GPU memory, and (when it does not fit: 1 free byte) in pinned host
    memory with each batch gathered there and copied without blocking. Same batches as the host bank's."""
    rows = make_split(scan_image_folder(tiny_data), 0.2, 0.2, seed=1)
    cache = build_cache(tiny_data, [r["path"] for r in rows], NORM.image_size)
    classes = {c: i for i, c in enumerate(sorted({r["label"] for r in rows}))}
    host = ImageBank.load(cache, rows, classes, torch.device("cpu"))
    gpu = ImageBank.load(cache, rows, classes, torch.device("cuda"), free_bytes=free_bytes)
    assert gpu.where == ("device" if free_bytes is None else "pinned")
    members = list(range(len(rows)))
    for (a, ta, pa, _), (b, tb, pb, _) in zip(
        ResidentBatches(host, members, 7, shuffle=True, seed=3),
        ResidentBatches(gpu, members, 7, shuffle=True, seed=3),
        strict=True,
    ):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()) and torch.equal(ta, tb.cpu())
        assert torch.equal(pa, pb.cpu())


def resident_module(data_dir, rows, model_input=NORM, seed=7) -> ImageFolderDataModule:
    cfg = DataConfig(data_dir=str(data_dir), batch_size=5, num_workers=0, loader="resident")
    module = ImageFolderDataModule(cfg, rows, model_input, seed=seed)
    module.setup("fit")
    return module


def test_resident_batches_visit_each_training_image_once_per_epoch(tiny_data):
    rows = make_split(scan_image_folder(tiny_data), 0.2, 0.2, seed=1)
    datamodule = resident_module(tiny_data, rows)
    assert datamodule.bank.where == "host" and datamodule.augment_on == "device"  # resident: never in workers
    train = datamodule.loader("train", shuffle=True)
    train_rows = [r for r in rows if r["split"] == "train"]
    assert len(train) == len(train_rows) // 5  # the last partial batch is dropped
    epochs = [torch.cat([batch[2] for batch in train]) for _ in range(2)]
    for seen in epochs:
        assert len(seen) == len(train) * 5 and len(set(seen.tolist())) == len(seen)  # nobody twice
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    assert torch.equal(torch.cat([b[2] for b in resident_module(tiny_data, rows).loader("train", True)]), epochs[0])
    resumed = resident_module(tiny_data, rows)  # a run resumed at its second epoch reads the trainer's epoch
    resumed.trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    resumed.trainer.fit_loop.epoch_progress.current.completed = 1
    assert resumed.trainer.current_epoch == 1
    assert torch.equal(torch.cat([b[2] for b in resumed.loader("train", True)]), epochs[1])
    other_seed = resident_module(tiny_data, rows, seed=8).loader("train", True)  # --trainer.seed orders batches
    assert not torch.equal(torch.cat([b[2] for b in other_seed]), epochs[0])
    cache = build_cache(tiny_data, [r["path"] for r in rows], NORM.image_size)
    classes = sorted({r["label"] for r in rows})
    images, targets, positions, skipped = next(iter(datamodule.loader("val")))
    assert images.shape == (5, 3, 24, 24) and images.dtype == torch.uint8 and skipped == []
    val_rows = [r for r in rows if r["split"] == "val"]
    for image, target, position in zip(images, targets, positions, strict=True):
        row = val_rows[position]
        assert np.array_equal(image.permute(1, 2, 0).numpy(), cache.get(row["path"]))
        assert classes[target] == row["label"]
    val_positions = torch.cat([b[2] for b in datamodule.loader("val")])
    assert val_positions.tolist() == list(range(len(val_rows)))  # in order, every image, none dropped


def test_resident_images_have_the_masked_regions_blacked_out_once(tiny_data):
    rows = make_split(scan_image_folder(tiny_data), 0.2, 0.2, seed=1)
    box = (0.0, 0.5, 0.5, 1.0)  # bottom-left quarter
    datamodule = resident_module(tiny_data, rows, dataclasses.replace(NORM, mask=(box,)))
    images = datamodule.bank.images
    assert images[:, 12:, :12].max() == 0 and images[:, :12, 12:].max() > 0


def test_resident_masking_is_the_workers_black_out_pixel_for_pixel(tiny_data):
    rows = make_split(scan_image_folder(tiny_data), 0.2, 0.2, seed=1)
    box = (0.13, 0.21, 0.57, 0.83)  # edges where rounding decides
    datamodule = resident_module(tiny_data, rows, dataclasses.replace(NORM, mask=(box,)))
    for k, row in enumerate(rows[:12]):
        expected = mask_pixels(datamodule.cache.get(row["path"]), (box,))
        assert np.array_equal(np.asarray(datamodule.bank.images[k]), expected), row["path"]


def test_resident_path_skips_an_unreadable_training_image_and_stops_on_a_test_one(tiny_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns(".kvasir_cache"))
    rows = make_split(scan_image_folder(data), 0.2, 0.2, seed=1)
    bad_train = next(r for r in rows if r["split"] == "train")["path"]
    bad_test = next(r for r in rows if r["split"] == "test")["path"]
    for bad in (bad_train, bad_test):
        (data / bad).write_bytes(b"not a jpeg")
    datamodule = resident_module(data, rows)
    train = datamodule.loader("train", shuffle=True)
    assert bad_train in datamodule.skipped and "cannot identify" in datamodule.skipped[bad_train]
    assert len(train.members) == sum(r["split"] == "train" for r in rows) - 1
    with pytest.raises(DataError, match=f"Cannot read .*{bad_test}"):
        datamodule.loader("test")


def test_gpu_defaults_apply_only_when_cuda_is_visible(monkeypatch, tiny_data):
    rows = make_split(scan_image_folder(tiny_data), seed=1)
    settings = trainer_module.TrainerConfig()
    cpu = ImageFolderDataModule(DataConfig(data_dir=str(tiny_data)), rows, NORM)
    assert (trainer_module.auto_precision(), trainer_module.speed_settings(settings)) == ("32-true", ("off", "off"))
    assert (cpu.batch_size, cpu.loader_kind, cpu.augment_on) == (32, "workers", "workers")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    gpu = ImageFolderDataModule(DataConfig(data_dir=str(tiny_data)), rows, NORM)
    assert trainer_module.auto_precision() == "16-mixed"
    assert trainer_module.speed_settings(settings) == (trainer_module.GPU_COMPILE, "on")
    assert (gpu.batch_size, gpu.loader_kind, gpu.augment_on) == (dataset_module.GPU_BATCH_SIZE, "resident", "device")
    assert trainer_module.training_devices(settings) == 1
    two = trainer_module.training_devices(dataclasses.replace(settings, devices=2))
    assert (auto_loader(DataConfig(), 1), auto_loader(DataConfig(), two)) == ("resident", "workers")
    no_cache = ImageFolderDataModule(DataConfig(data_dir=str(tiny_data), cache=False), rows, NORM)
    assert no_cache.loader_kind == "workers"  # the resident path is made from the cache
    assert trainer_module.speed_settings(dataclasses.replace(settings, accelerator="cpu")) == ("off", "off")


def test_learning_rate_follows_the_batch_with_warmup(tiny_data, tmp_path):
    cfg = ModelConfig(lr=1e-3, lr_reference_batch=32)
    assert scaled_lr(cfg, 256) == pytest.approx(8e-3) and warmup_epochs(cfg, 256) == 3
    assert scaled_lr(dataclasses.replace(cfg, lr_scaling="sqrt"), 128) == pytest.approx(2e-3)
    assert scaled_lr(dataclasses.replace(cfg, lr_scaling="none"), 256) == pytest.approx(1e-3)
    assert scaled_lr(cfg, 16) == pytest.approx(5e-4) and warmup_epochs(cfg, 16) == 0
    assert warmup_epochs(dataclasses.replace(cfg, warmup_epochs=1), 256) == 1
    # through fit: 8 images per batch x 2 accumulated = 16 per step, lr meant for 4 -> 4 x 1e-3 after warmup
    main(
        [
            "fit",
            "--data.data_dir",
            str(tiny_data),
            "--data.image_size",
            "32",
            "--data.batch_size",
            "8",
            "--data.num_workers",
            "0",
            "--model.name",
            "resnet10t",
            "--model.pretrained",
            "false",
            "--model.lr_reference_batch",
            "4",
            "--trainer.accumulate_grad_batches",
            "2",
            "--trainer.max_epochs",
            "5",
            "--trainer.max_steps",
            "3",
            "--trainer.logger",
            "none",
            "--trainer.runs_dir",
            str(tmp_path),
            "--trainer.run_name",
            "r",
            "--test_after",
            "false",
        ]
    )
    group = read_checkpoint(tmp_path / "r" / "checkpoints" / "last.ckpt")["optimizer_states"][0]["param_groups"][0]
    assert group["initial_lr"] == pytest.approx(4e-3)
    assert group["lr"] == pytest.approx(0.01 * 4e-3)  # 3 steps into the first of 3 warmup epochs


def test_scaling_reaches_an_init_args_lr_and_a_per_step_warmup_counts_steps():
    sgd = ModelConfig(optimizer={"class_path": "SGD", "init_args": {"lr": 0.1}}, lr_reference_batch=32)
    parameters = [torch.nn.Parameter(torch.zeros(2))]
    assert build_optimizer(sgd, parameters, 64).defaults["lr"] == pytest.approx(0.2)
    per_step = dataclasses.replace(
        sgd, lr_scheduler={"class_path": "StepLR", "init_args": {"step_size": 100}, "interval": "step"}
    )
    optimizer = build_optimizer(per_step, parameters, 64)
    scheduler = build_lr_scheduler(per_step, optimizer, max_epochs=10, batch_size=64, steps_per_epoch=5)
    assert scheduler["interval"] == "step" and scheduler["scheduler"]._milestones == [3 * 5]  # 3 epochs of 5 steps


def test_the_automatic_batch_follows_the_accelerator_not_the_machine(monkeypatch):
    from kvasir_mobileone.commands.fit import resolved

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    data, settings = resolved(DataConfig(), trainer_module.TrainerConfig(accelerator="cpu"))
    assert (data.batch_size, data.loader, settings.precision, settings.channels_last) == (
        32,
        "workers",
        "32-true",
        "off",
    )
    data, settings = resolved(DataConfig(), trainer_module.TrainerConfig())
    assert (data.batch_size, data.loader, settings.precision, settings.channels_last) == (
        256,
        "resident",
        "16-mixed",
        "on",
    )


@pytest.mark.slow
def test_compile_keeps_the_outputs_and_the_checkpoint_keys():
    torch.manual_seed(0)
    model = ModelConfig(name="resnet10t", pretrained=False)
    module = Classifier(["a", "b", "c"], model, model_input=model_input_for("resnet10t", 32))
    keys = list(module.state_dict())
    x = torch.rand(4, 3, 32, 32)
    module.eval()
    with torch.no_grad():
        eager = module(x)
    module.accelerate("default", "on")
    with torch.no_grad():
        compiled = module(x)
    assert module.backbone.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(eager, compiled, atol=1e-4)
    assert list(module.state_dict()) == keys  # a checkpoint of the compiled model loads into a plain one
    module.train()
    module(x).sum().backward()  # and it trains
    assert module.backbone.fc.weight.grad is not None


@pytest.mark.slow
def test_compiled_training_is_one_static_graph_and_evaluation_runs_eager_on_current_weights(tmp_path, monkeypatch):
    """--trainer.compile: full training batches run one graph of static shape; the epoch's last, smaller batch
    and evaluation run eager (no recompile; no graph under no_grad holding BatchNorm folded with stale weights,
    PyTorch issue 108863), so evaluation after training steps equals a plain model with the same weights. The
    kernels go to the inductor cache folder; the checkpoint keys stay the plain model's."""
    from torch._dynamo.utils import counters

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    counters.clear()
    model = ModelConfig(name="resnet10t", pretrained=False)
    module = Classifier(["a", "b", "c"], model, model_input=model_input_for("resnet10t", 32))
    keys = list(module.state_dict())
    module.accelerate("default", "off", static_batch=8)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    module.train()
    for n in (8, 8, 5):  # two full batches, then the epoch's last one
        module(torch.rand(n, 3, 32, 32)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    module.eval()
    assert not module.backbone.training and not module.training
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        evaluated = module(x)
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])  # no graph for evaluation
    plain = Classifier(["a", "b", "c"], model, model_input=model_input_for("resnet10t", 32))
    plain.load_state_dict(module.state_dict())  # the keys a checkpoint of the compiled model holds
    with torch.no_grad():
        assert torch.allclose(evaluated, plain.eval()(x), atol=1e-5)
    assert list(module.state_dict()) == keys and any((tmp_path / "inductor").rglob("*"))
    module.train()
    assert module.backbone.training


def fit_accuracy(data_dir, runs, name, *flags) -> tuple[float, np.ndarray]:
    main(
        [
            "fit",
            "--data.data_dir",
            str(data_dir),
            *fit_flags(epochs=8, test_fraction=0.3),
            "--trainer.runs_dir",
            str(runs),
            "--trainer.run_name",
            name,
            *flags,
        ]
    )
    test = runs / name / "test"
    metrics = json.loads((test / "metrics.json").read_text())
    predictions = np.genfromtxt(test / "predictions.csv", delimiter=",", names=True, dtype=None, encoding="utf-8")
    return metrics["accuracy"], predictions["label"] == predictions["predicted"]


@pytest.mark.slow
def test_resident_path_reaches_the_accuracy_of_the_workers_path(tiny_data, tmp_path):
    """Same seed and split, the two data paths (DataLoader workers with torchvision against resident batches with
    the batched augmentation): both learn, and the resident path is not worse: the lower bound of the paired
    accuracy difference (resident − workers, Agresti-Min) stays above −0.15 (a margin, not McNemar's p > 0.05,
    which on 48 images would pass for a much worse path)."""
    acc_workers, right_workers = fit_accuracy(tiny_data, tmp_path, "workers", "--data.loader", "workers")
    acc_resident, right_resident = fit_accuracy(tiny_data, tmp_path, "resident", "--data.loader", "resident")
    chance = 1 / 4
    assert acc_workers > chance + 0.2 and acc_resident > chance + 0.2
    only_resident = int(np.sum(right_resident & ~right_workers))
    only_workers = int(np.sum(~right_resident & right_workers))
    low, _ = matched_pairs_interval(only_resident, only_workers, len(right_workers))
    assert low > -0.15, (acc_resident, acc_workers, low)


def test_gpu_benchmark_measures_through_the_trainer(tiny_data):
    rows = kvasir_sized_rows(tiny_data, 120)
    assert [r["split"] for r in rows].count("train") == 96
    path = dataclasses.replace(CURRENT, batch_size=8, precision="32-true")
    result = measure("resnet10t", path, tiny_data, rows, warmup=1, steps=2, image_size=32)
    assert result["images_per_s"] > 0 and result["gpu_utilisation"] is None
    row = {"model": "resnet10t", "path": "current"} | dataclasses.asdict(path) | result
    text = render_gpu(
        {
            "images": 120,
            "steps": 2,
            "warmup": 1,
            "bf16_matmul_tflops": 1.0,
            "gflops_per_training_image": {"resnet10t": 1.0},
            "rows": [row],
        }
    )
    assert "| resnet10t | current | resident | 8 | 32-true |" in text


@pytest.mark.slow
def test_compile_cost_cold_and_warm_and_the_profiler_summary_run_through_the_trainer(tiny_data):
    """The pieces `kvasir benchmark --device cuda` adds, on a CPU with a small model: a compile mode's warm-up
    and speed in fresh processes with an empty and then a filled inductor cache, torch.profiler's operator table
    over a few steps, and the copy bandwidth the step's traffic is compared with."""
    rows = kvasir_sized_rows(tiny_data, 60)
    path = dataclasses.replace(CURRENT, batch_size=8, precision="32-true")
    cost = compile_cost("resnet10t", "default", tiny_data, rows, warmup=1, steps=2, image_size=32, path=path)
    assert "error" not in cost, cost
    assert cost["cold_warmup_s"] > 0 and cost["warm_warmup_s"] > 0 and cost["warm_images_per_s"] > 0
    table = profile_summary("resnet10t", path, tiny_data, rows, warmup=1, steps=2, image_size=32)
    assert "Self CPU" in table and "aten::" in table
    assert copy_bandwidth_gbs(2**24, repeats=3) > 0
    measured = measure("resnet10t", path, tiny_data, rows, warmup=1, steps=2, image_size=32)
    assert measured["min_bandwidth_gbs"] is None  # a lower bound from CUDA memory statistics: none on a CPU
    text = render_gpu(
        {
            "images": 60,
            "steps": 2,
            "warmup": 1,
            "bf16_matmul_tflops": 1.0,
            "copy_bandwidth_gbs": 100.0,
            "gflops_per_training_image": {"resnet10t": 1.0},
            "rows": [{"model": "resnet10t", "path": "current"} | dataclasses.asdict(path) | measured],
            "compile_cost": [cost],
            "profile_model": "resnet10t",
            "profile": table,
        }
    )
    assert "| resnet10t | default |" in text and "warm-up cold (s)" in text and table in text


@pytest.mark.parametrize("loader", ["workers", "resident"])
def test_an_evaluated_split_is_served_unaugmented_with_the_models_class_indices(tiny_data, loader):
    """What the test step and the detector's passes read: the split the data module is told to evaluate, every image
    once and unaugmented, and with the model's class names the class indices hold even when the rows served lack a
    class (a sample of the training images, a small val split)."""
    rows = make_split(scan_image_folder(tiny_data), 0.2, 0.2, seed=1)
    names = sorted({r["label"] for r in rows})
    sample = [r for r in rows if r["split"] == "train" and r["label"] != names[0]]
    data = DataConfig(data_dir=str(tiny_data), batch_size=5, num_workers=0, loader=loader)
    module = ImageFolderDataModule(data, sample, NORM, evaluate="train", class_names=names)
    module.setup("test")
    batches = list(module.test_dataloader())
    targets = torch.cat([b[1] for b in batches])
    assert len(targets) == len(sample) and set(targets.tolist()) == set(range(1, len(names)))
    first, again = (torch.cat([b[0] for b in module.predict_dataloader()]) for _ in range(2))
    assert torch.equal(first, again) and torch.equal(first, torch.cat([b[0] for b in batches]))  # unaugmented

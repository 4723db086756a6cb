import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput
from kvasir_mobileone.models.backbone import WeightsUnavailableError, create_backbone
from kvasir_mobileone.models.classifier import Classifier, ModelConfig


def test_offline_pretrained_error_names_both_ways_out():
    with pytest.raises(WeightsUnavailableError) as err:
        create_backbone("mobileone_s0", num_classes=4, pretrained=True)
    assert "--model.weights FILE" in str(err.value) and "--model.pretrained false" in str(err.value)


def test_missing_weights_file_is_named(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="nope.safetensors"):
        create_backbone("mobileone_s0", 4, weights=str(tmp_path / "nope.safetensors"))


def test_local_safetensors_weights_load_with_a_new_head(tmp_path):
    imagenet_like = timm.create_model("mobileone_s0", num_classes=1000)
    save_file(imagenet_like.state_dict(), tmp_path / "model.safetensors")
    model = create_backbone("mobileone_s0", num_classes=4, weights=str(tmp_path / "model.safetensors"))
    assert model.get_classifier().out_features == 4
    assert torch.equal(model.stem.conv_kxk[0].conv.weight, imagenet_like.stem.conv_kxk[0].conv.weight)


@pytest.mark.parametrize("name", [f"mobileone_s{i}" for i in range(5)])
def test_every_mobileone_variant_builds_and_runs(name):
    module = Classifier(["a", "b", "c"], ModelConfig(name=name, pretrained=False))
    assert module(torch.randn(2, 3, 64, 64)).shape == (2, 3)


def test_warmup_cosine_schedule_and_optimizer_injection():
    module = Classifier(
        ["a", "b"],
        ModelConfig(
            name="mobileone_s0",
            pretrained=False,
            optimizer={"class_path": "torch.optim.SGD", "init_args": {"momentum": 0.9}},
            lr=0.1,
            warmup_epochs=2,
            lr_scheduler={"class_path": "CosineAnnealingLR", "init_args": {"T_max": 4}},
        ),
        max_epochs=6,
    )
    config = module.configure_optimizers()
    optimizer, scheduler = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] == 0.9
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    assert lrs[0] < lrs[1] < lrs[2] and lrs[2] == pytest.approx(0.1) and lrs[5] < lrs[3]


def test_unknown_optimizer_is_a_clear_error():
    module = Classifier(["a", "b"], ModelConfig(name="mobileone_s0", pretrained=False, optimizer="Nope"))
    with pytest.raises(UserError, match="torch.optim"):
        module.configure_optimizers()


def test_any_optimizer_and_scheduler_class_is_injected_with_its_arguments():
    config = ModelConfig(
        name="mobileone_s0",
        pretrained=False,
        optimizer={"class_path": "torch.optim.AdamW", "init_args": {"betas": [0.8, 0.9], "weight_decay": 0.05}},
        lr_scheduler={
            "class_path": "torch.optim.lr_scheduler.StepLR",
            "init_args": {"step_size": 2},
            "interval": "step",
        },
    )
    config_out = Classifier(["a", "b"], config).configure_optimizers()
    optimizer, scheduler = config_out["optimizer"], config_out["lr_scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and tuple(optimizer.defaults["betas"]) == (0.8, 0.9)
    assert optimizer.defaults["weight_decay"] == 0.05  # init_args win over the weight_decay shortcut
    assert isinstance(scheduler["scheduler"], torch.optim.lr_scheduler.StepLR) and scheduler["interval"] == "step"


def test_a_checkpoint_gives_back_the_input_it_was_trained_with(tmp_path):
    model_input = ModelInput(40, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bicubic", ((0.0, 0.0, 0.5, 0.25),))
    module = Classifier(["a", "b"], ModelConfig(name="mobileone_s0", pretrained=False), model_input=model_input)
    torch.save({"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}, tmp_path / "m.ckpt")
    assert Classifier.from_checkpoint(tmp_path / "m.ckpt").model_input == model_input  # read back, not recomputed


RELEASE_0_1_0 = Path(__file__).parent / "fixtures" / "release_0_1_0"


def test_a_checkpoint_and_a_bundle_written_by_release_0_1_0_keep_loading(tmp_path):
    """The model-input description as 0.1.0 wrote it (checkpoint hparams with the region names apart; a bundle's
    "input" with its tensor fields) reads back as one ModelInput, and preprocesses a frame bit for bit as 0.1.0 did."""
    recorded = json.loads((RELEASE_0_1_0 / "model_input.json").read_text())
    hparams, expected = recorded["checkpoint_hyper_parameters"], recorded["expected"]
    module = Classifier(hparams["class_names"], hparams["model"] | {"pretrained": False})
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, tmp_path / "old.ckpt")
    from_checkpoint = Classifier.from_checkpoint(tmp_path / "old.ckpt").model_input
    from_bundle = ModelInput.from_dict(recorded["bundle_input"])
    assert from_checkpoint == from_bundle
    assert from_bundle.mask_regions == ("bottom-left-box",)
    assert int(from_bundle.hidden().sum()) == expected["hidden_pixels"]
    assert from_bundle.view_sha256 == expected["field_of_view_sha256"]
    assert (from_bundle.image_size, from_bundle.interpolation) == (expected["image_size"], expected["interpolation"])
    x, _ = ModelInput.from_dict(recorded["bundle_input"]).read(RELEASE_0_1_0 / "frame.jpg")
    assert np.array_equal(x, np.load(RELEASE_0_1_0 / "network_input.npy"))


def test_deploy_load_opens_release_0_1_0s_checkpoint_and_a_bundle_of_its_form_as_one_predictor(tmp_path):
    """deploy/runtime.load, the one way to open a model, takes a checkpoint with 0.1.0's hyper-parameters and a
    bundle as 0.1.0 wrote them (metadata.json without a detector; an ONNX graph with logits only, no features): both
    are Predictors that answer the fixture's frame alike, and the bundle's answer has no detector's judgement."""
    from safetensors.torch import save_file

    from kvasir_mobileone.deploy.predict import classify
    from kvasir_mobileone.deploy.runtime import load
    from kvasir_mobileone.models.backbone import fuse

    recorded = json.loads((RELEASE_0_1_0 / "model_input.json").read_text())
    hparams = recorded["checkpoint_hyper_parameters"]
    module = Classifier(hparams["class_names"], hparams["model"] | {"pretrained": False}).eval()
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, tmp_path / "old.ckpt")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    fused = fuse(module.backbone)
    size = recorded["bundle_input"]["image_size"]
    torch.onnx.export(
        fused,
        (torch.rand(1, 3, size, size),),
        str(bundle / "model.onnx"),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )
    save_file(fused.state_dict(), bundle / "model.safetensors")
    metadata = {"model_name": "resnet10t", "class_names": hparams["class_names"], "input": recorded["bundle_input"]}
    (bundle / "metadata.json").write_text(json.dumps(metadata))
    x, _ = ModelInput.from_dict(recorded["bundle_input"]).read(RELEASE_0_1_0 / "frame.jpg")
    answers = {}
    for name, path in (("checkpoint", tmp_path / "old.ckpt"), ("bundle", bundle)):
        predictor = load(path)
        assert predictor.class_names == hparams["class_names"] and predictor.model_input.image_size == size
        probs, (prediction,) = classify(predictor, x[None], ["frame.jpg"], 3)
        answers[name] = (probs, prediction)
        assert predictor.network()(torch.from_numpy(x[None])).shape == (1, len(hparams["class_names"]))
    (run_probs, from_run), (bundle_probs, from_bundle) = answers["checkpoint"], answers["bundle"]
    assert np.abs(run_probs - bundle_probs).max() < 1e-4 and from_run.top[0][0] == from_bundle.top[0][0]
    assert from_bundle.answer == from_bundle.top[0][0] and from_bundle.outside is None and from_bundle.ood_score is None


def test_the_model_input_description_round_trips_and_refuses_a_damaged_view():
    recorded = json.loads((RELEASE_0_1_0 / "model_input.json").read_text())
    model_input = ModelInput.from_dict(recorded["bundle_input"])
    assert ModelInput.from_dict(model_input.to_dict()) == model_input
    damaged = model_input.to_dict() | {"field_of_view_sha256": "0" * 64}
    with pytest.raises(ValueError, match="do not match their SHA-256"):
        ModelInput.from_dict(damaged)
    with pytest.raises(ValueError, match="upgrade kvasir-mobileone"):
        ModelInput.from_dict(model_input.to_dict() | {"version": 99})


def test_a_checkpoint_without_a_model_input_description_is_refused_in_words(tmp_path):
    module = Classifier(["a", "b"], ModelConfig(name="resnet10t", pretrained=False))
    hparams = {k: v for k, v in module.hparams.items() if k != "normalization"}
    torch.save({"hyper_parameters": hparams, "state_dict": module.state_dict()}, tmp_path / "bare.ckpt")
    with pytest.raises(UserError, match="no description of the model's input"):
        Classifier.from_checkpoint(tmp_path / "bare.ckpt")

"""timm backbones: creating one (pretrained from the hub, from a local file, or from scratch), what input it
expects, and its reparameterized (fused) copy for inference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import timm
import torch
from timm.utils.model import reparameterize_model

from kvasir_mobileone.data.regions import parse_regions
from kvasir_mobileone.errors import UserError
from kvasir_mobileone.images import ModelInput


class WeightsUnavailableError(UserError):
    """Pretrained weights could not be downloaded or read."""


def create_backbone(
    name: str, num_classes: int, pretrained: bool = True, weights: str | None = None, drop_path: float = 0.0
):
    """A timm model with a fresh `num_classes` head: from local `weights`, from the hub, or from scratch; with
    stochastic depth at rate `drop_path` when it is above 0 (a model without it refuses the argument)."""
    if drop_path:
        try:
            return _create(name, num_classes, pretrained, weights, drop_path_rate=drop_path)
        except TypeError as err:
            raise UserError(f"--model.drop_path {drop_path}: timm's {name} has no stochastic depth ({err}).") from err
    return _create(name, num_classes, pretrained, weights)


def _create(name: str, num_classes: int, pretrained: bool, weights: str | None, **kwargs):
    if weights:
        if not Path(weights).is_file():
            raise WeightsUnavailableError(f"Weights file {weights} not found.")
        # timm loads the file as the pretrained source and drops a classifier head of another size.
        return timm.create_model(
            name, pretrained=True, num_classes=num_classes, pretrained_cfg_overlay={"file": str(weights)}, **kwargs
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **kwargs)
    except Exception as err:  # hub, network and cache errors come in many types
        raise WeightsUnavailableError(
            f"Could not load ImageNet-pretrained weights for {name} ({type(err).__name__}: {err}). "
            "On a machine without internet either pass a local file with --model.weights FILE "
            f"(e.g. the model.safetensors of timm/{name}.apple_in1k from huggingface.co, copied over), "
            "or train from scratch with --model.pretrained false."
        ) from err


def model_input_for(
    model_name: str, image_size: int | None = None, mask_regions: list[str] | None = None
) -> ModelInput:
    """What the network's input is: mean/std, interpolation and (unless --data.image_size says otherwise) size from
    timm's data config for the model, and the boxes of --data.mask_regions. `fit` makes it once and gives it to the
    model and the data alike; the checkpoint stores it, and everything after reads it back from there."""
    timm_config = timm.data.resolve_data_config(pretrained_cfg=timm.models.get_pretrained_cfg(model_name).to_dict())
    return ModelInput(
        image_size=image_size or timm_config["input_size"][-1],
        mean=tuple(timm_config["mean"]),
        std=tuple(timm_config["std"]),
        interpolation=timm_config.get("interpolation", "bilinear"),
        mask=tuple(box for boxes in parse_regions(mask_regions).values() for box in boxes),
        mask_regions=tuple(mask_regions or ()),
    )


def logits_and_features(network: torch.nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, pooled pre-logits features) of a timm network from one pass: forward_features, then forward_head
    with and without the classifier (forward_head(forward_features(x)) is what timm's forward computes). The one
    place these two outputs are made: training's test step, the bundle's graphs and `kvasir features` all call it."""
    maps = network.forward_features(images)
    return network.forward_head(maps), network.forward_head(maps, pre_logits=True)


def head_weights(network: torch.nn.Module) -> tuple[np.ndarray, np.ndarray] | None:
    """(weight, bias) of a timm network's classifier as float64 arrays, when it is one linear layer on the pooled
    features (logits = features @ weight.T + bias): what the vim and react detectors read. None otherwise."""
    head = network.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        return None
    bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
    return head.weight.detach().double().cpu().numpy(), bias.detach().double().cpu().numpy()


class LogitsAndFeatures(torch.nn.Module):
    """A timm network with the two outputs of logits_and_features, as the bundle's graphs have them."""

    def __init__(self, network: torch.nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return logits_and_features(self.network, images)


def fuse(backbone: torch.nn.Module) -> torch.nn.Module:
    """The reparameterized copy for inference (eval mode, fp32): the backbone itself is left as it is."""
    was_training = backbone.training
    fused = reparameterize_model(backbone.eval()).float()  # a copy
    backbone.train(was_training)
    return fused


def parameter_count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def parameter_info(backbone: torch.nn.Module) -> dict[str, int]:
    """Parameters of the training-time model and of its reparameterized (fused) copy."""
    return {"parameters_unfused": parameter_count(backbone), "parameters_fused": parameter_count(fuse(backbone))}


def flops_per_image(model: torch.nn.Module, size: int = 224) -> float:
    """FLOPs of one forward pass on one size x size image (torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.rand(1, 3, size, size))
    return float(counter.get_total_flops())

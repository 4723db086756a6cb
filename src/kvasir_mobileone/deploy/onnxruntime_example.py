"""Classify one frame with a kvasir-mobileone bundle and plain onnxruntime, Pillow and numpy: the preprocessing of
`kvasir predict` (reduced-scale JPEG decode, upright 8-bit RGB, one resize, the masked regions and everything outside
the field of view black, mean/std). The model card of every bundle shows this file; a test runs it on a bundle with a
mask and a field of view against `kvasir predict`, answer included (its class, "not sure" or "outside the training
data", and the prediction set). Run it in the bundle folder, with your frame as image.jpg."""

import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

with open("metadata.json") as f:
    meta = json.load(f)
spec = meta["input"]  # the network's input, exactly as in training
if spec.get("clean"):  # --data.clean_frame: its model card says how to inpaint the frame first; kvasir predict does it
    raise SystemExit("This model inpaints each image's frame and overlay marks first: see its model card.")
size = spec["image_size"]
resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[spec["interpolation"]]
with Image.open("image.jpg") as image:
    image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale that still covers size x size
    image = ImageOps.exif_transpose(image).convert("RGB")  # upright, 8-bit RGB
pixels = np.array(image.resize((size, size), resample))
for x0, y0, x1, y1 in spec["mask"]:  # regions the model never saw are black
    pixels[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = 0
if spec.get("field_of_view"):  # and so is everything outside its field of view (field_of_view.png, white: seen)
    seen = np.asarray(Image.open("field_of_view.png").convert("L")) >= 128
    pixels[~seen] = 0
mean, std = np.float32(spec["mean"]), np.float32(spec["std"])
x = ((pixels.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
logits, features = ort.InferenceSession("model.onnx").run(None, {"image": x})
z = logits[0].astype(np.float64)
probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
names, rule = meta["class_names"], meta.get("uncertainty")
answer = names[int(probs.argmax())]
if rule:  # "I don't know": the bundle's detector, abstention and prediction set (kvasir predict's answer)
    f, arrays = features[0].astype(np.float64), np.load("uncertainty.npz")
    if rule["detector"] == "knn":  # 1 - cosine similarity to the k-th nearest training feature
        similarity = arrays["bank"].astype(np.float64) @ (f / np.linalg.norm(f))
        score = 1 - np.sort(similarity)[-min(rule["k"], len(similarity))]
    elif rule["detector"] == "mahalanobis":  # to the nearest class mean, shared covariance
        d = f - arrays["means"].astype(np.float64)
        score = np.min(np.einsum("cd,de,ce->c", d, arrays["precision"].astype(np.float64), d))
    else:  # energy
        score = -(z.max() + np.log(np.exp(z - z.max()).sum()))
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]  # the probability of the classes more likely than each
    qhat = rule["qhat"]
    answer_set = " or ".join(names[c] for c, b in zip(order, before, strict=True) if qhat is None or b <= qhat)
    if rule["ood_threshold"] is not None and score > rule["ood_threshold"]:
        answer = "outside the training data"
    elif rule["confidence_threshold"] is not None and probs.max() < rule["confidence_threshold"]:
        answer = "not sure"
    print(answer, "| set:", answer_set)
else:
    print(answer)

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
visible = np.ones((size, size), bool)  # what the model sees
for x0, y0, x1, y1 in spec["mask"]:  # regions the model never saw are black
    visible[round(y0 * size) : round(y1 * size), round(x0 * size) : round(x1 * size)] = False
if spec.get("field_of_view"):  # and so is everything outside its field of view (field_of_view.png, white: seen)
    visible &= np.asarray(Image.open("field_of_view.png").convert("L")) >= 128
pixels[~visible] = 0
# No picture (black, white, grey, one colour): in every channel the middle 90% of the visible pixels (every 4th of
# every 4th row) span fewer than 16 levels. Outside the training data, whatever the model says.
low, high = np.percentile(pixels[::4, ::4][visible[::4, ::4]].astype(np.float32), [5, 95], axis=0)
no_picture = bool((high - low < 16).all())
mean, std = np.float32(spec["mean"]), np.float32(spec["std"])
x = ((pixels.astype(np.float32) / 255 - mean) / std).transpose(2, 0, 1)[None]
logits, features = ort.InferenceSession("model.onnx").run(None, {"image": x})
z = logits[0].astype(np.float64)
probs = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
names, rule = meta["class_names"], meta.get("uncertainty")
answer = "outside the training data" if no_picture else names[int(probs.argmax())]
if rule:  # "I don't know": the bundle's detector, input check, abstention and prediction set (kvasir predict's)
    f, a = features[0].astype(np.float64), {k: v.astype(np.float64) for k, v in np.load("uncertainty.npz").items()}

    def distance(v, means, precision):  # the smallest Mahalanobis distance to the means
        d = v - np.atleast_2d(means)
        return np.min(np.einsum("cd,de,ce->c", d, precision, d))

    def energy(logits):
        return -(logits.max() + np.log(np.exp(logits - logits.max()).sum()))

    detector, score = rule["detector"], None
    if detector == "energy":
        score = energy(z)
    elif detector == "knn":  # 1 - cosine similarity to the k-th nearest training feature
        similarity = a["bank"] @ (f / np.linalg.norm(f))
        score = 1 - np.sort(similarity)[-min(rule["k"], len(similarity))]
    elif detector in ("mahalanobis", "relative_mahalanobis"):  # to the nearest class mean, shared covariance
        score = distance(f, a["means"], a["precision"])
        if detector == "relative_mahalanobis":  # less the distance to every training feature's mean
            score -= distance(f, a["background_mean"], a["background_precision"])
    elif detector == "vim":  # the norm off the principal subspace, scaled, plus energy
        score = a["alpha"][0] * np.linalg.norm((f - a["origin"]) @ a["null_space"]) + energy(z)
    elif detector == "react":  # energy of the logits from features clipped at their training 90th percentile
        score = energy(a["head_weight"] @ np.minimum(f, a["clip"][0]) + a["head_bias"])
    outside = score is not None and rule["ood_threshold"] is not None and score > rule["ood_threshold"]
    if rule.get("input_threshold") is not None:  # the input check: colour and texture against the training images'
        x = pixels[::2, ::2].astype(np.float64) / 255
        seen = visible[::2, ::2]
        inside, luma = x[seen], x @ [0.299, 0.587, 0.114]
        r, g, b = inside.T
        top, low = inside.max(axis=1), inside.min(axis=1)
        stats = [*inside.mean(axis=0), *inside.std(axis=0), *np.percentile(luma[seen], [10, 50, 90])]
        stats += [((top - low) / np.maximum(top, 1e-3)).mean(), (r - g).std(), ((r + g) / 2 - b).std()]
        for step in (1, 4):  # the mean brightness difference of neighbours 1 and 4 pixels apart, across and down
            across = np.abs(luma[:, step:] - luma[:, :-step])[seen[:, step:] & seen[:, :-step]]
            down = np.abs(luma[step:] - luma[:-step])[seen[step:] & seen[:-step]]
            stats += [np.log(across.mean() + 1e-3), np.log(down.mean() + 1e-3)]
        outside |= distance(np.array(stats), a["input_mean"], a["input_precision"]) > rule["input_threshold"]
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]  # the probability of the classes more likely than each
    qhat = rule["qhat"]
    answer_set = " or ".join(names[c] for c, b in zip(order, before, strict=True) if qhat is None or b <= qhat)
    if no_picture or outside:
        answer = "outside the training data"
    elif rule["confidence_threshold"] is not None and probs.max() < rule["confidence_threshold"]:
        answer = "not sure"
    print(answer, "| set:", answer_set)
else:
    print(answer)

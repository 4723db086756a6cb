"""Classify one frame with a kvasir-mobileone bundle and plain onnxruntime, Pillow and numpy: the preprocessing of
`kvasir predict` (reduced-scale JPEG decode, upright 8-bit RGB, one resize, the masked regions and everything outside
the field of view black, mean/std). The model card of every bundle shows this file; a test runs it on a bundle with a
mask and a field of view against `kvasir predict`. Run it in the bundle folder, with your frame as image.jpg."""

import json

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps

with open("metadata.json") as f:
    meta = json.load(f)
spec = meta["input"]  # the network's input, exactly as in training
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
logits = ort.InferenceSession("model.onnx").run(None, {"image": x})[0]
print(meta["class_names"][int(logits.argmax())])

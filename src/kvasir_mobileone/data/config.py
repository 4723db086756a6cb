"""The data settings of a run (`--data.*`): a plain dataclass without torch, so that `kvasir check`, the split and
the folds read the same configuration that `fit` does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from kvasir_mobileone.data.field_of_view import VIEW_QUANTILE


@dataclass(frozen=True)
class DataConfig:
    """Where the images are, how they are split and how they are batched.

    Args:
        data_dir: a folder of class folders (Kvasir v2: data/kvasir-dataset-v2)
        manifest: reuse this split manifest CSV so the test set stays fixed across runs
        val_fraction: share of the images in the validation split
        test_fraction: share of the images in the test split
        seed: seed of the split
        batch_size: images per batch (per device); None: 32 on a CPU, 256 on a GPU
        num_workers: None: one per CPU core, at most 8
        image_size: None: the backbone's input size from timm's data config
        near_duplicate_bits: images whose 64-bit perceptual hashes differ in <= this many bits share a split
        cache: decode each image once into DATA/.kvasir_cache (uint8 memory map), rebuilt when stale
        cache_dir: where the cache goes when the data folder is read-only
        loader: auto: resident on a single GPU (with the cache), else workers. resident: every image of the split
            held in GPU memory (pinned host memory when it does not fit) and batches gathered there, no CPU work
            per image; workers: DataLoader workers read the cache or decode the files
        augment_on: auto: on the GPU when there is one (batched tensor ops), else in workers; kornia: the
            previous GPU augmentation, kept for comparison (`kvasir benchmark --device cuda`)
        official_split: an official split instead of a random one: hyper-kvasir-2fold, hyper-kvasir-5fold (shipped
            with the package) or a CSV in their format (file-name;class-name;split-index). Images are matched by
            file name, labels come from the folders; fold `fold` is test, the others train, val carved from them
        fold: the official split's fold used as test (0-based)
        on_leak: report: near-duplicate groups that straddle train/val/test are listed in the run and every test
            report also gives the metrics on the leak-free test images; refuse: such a split stops fit
        mask_regions: regions blacked out of every image in training, evaluation and prediction, so that the
            model cannot read them: names (bottom-left-box, top-left-text, left-strip, right-strip,
            black-corners) or name:x0,y0,x1,y1 boxes in relative coordinates
        sampler: shuffle (each training image once per epoch) or balanced: training images drawn with
            replacement, each with probability 1 / (classes x its class's training images), as many per epoch
            as the training split holds, so every class is seen equally often (both loaders)
        exclude: a CSV with a `path` column (kvasir label-issues writes one) or a text file of paths relative
            to data_dir: those images are left out of every split, and the run and its report say how many
        field_of_view: full: the whole input; common: black out, in every image the model sees (training,
            evaluation, export, predict, serve), every pixel that is frame (near-black joined to the border) or
            overlay (text, boxes, icons) in more than 1 - view_quantile of some class's training frames, so every
            frame has the same outline whatever its source; or a field_of_view.png of another run (white: seen)
        view_quantile: with field_of_view common, a pixel stays in the view when it shows tissue in at least
            this share of every class's training frames; auto: chosen from the data, the widest view (the 0.95
            one, then stricter ones that also leave out every overlay mark, not only those that stay put) in
            which the number of frame and overlay-mark pixels left inside per training image, in all and per
            quarter of the input, does not differ between the classes (a permutation test of Kruskal-Wallis, at
            0.05: a failure to find a difference, not proof of none; their colour is not tested; fit prints the
            views tried, model_info.json keeps them)
        frame_swap: in training, each image takes with this probability the frame and overlays of another training
            image drawn at random (its own frame and overlay pixels inpainted from its tissue, the donor's
            pasted): the model learns that frames and overlays carry nothing about the class. Training only:
            evaluation, export and predict are unchanged (workers loader)
        clean_frame: inpaint: before the model sees an image (training, evaluation, export's parity check,
            predict, serve, video), its own frame and overlay marks inside the view are filled from the tissue
            around them (OpenCV's inpainting), so they look like neither; none: as they are. Part of the model
            input: an app that runs the bundle's ONNX file itself must do the same (the model card says how;
            workers loader; no Core ML export, whose graph cannot hold it)
        augment: the training augmentation: standard (the original workflow's rotation, flips and colour jitter),
            randaugment (torchvision's RandAugment, 2 operations at magnitude 9, before the standard ones) or
            trivialaugment (TrivialAugmentWide, likewise): on uint8 images in DataLoader workers; the GPU batch
            augmentation (--data.augment_on device or kornia) offers only standard and says so
        unlabeled_dir: a folder of unlabeled frames (any layout; HyperKvasir's unlabeled-images) for distillation
            with --model.teacher: the student also learns the teacher's answers on them. Checked like a folder
            (unreadable files named and left out) and against the split: a near-duplicate of a val or test image
            is left out (a leak); the run counts them (model_info.json, unlabeled_left_out.csv). Workers loader
    """

    data_dir: str = "data/kvasir-dataset-v2"
    manifest: str | None = None
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    seed: int = 42
    batch_size: int | None = None
    num_workers: int | None = None
    image_size: int | None = None
    near_duplicate_bits: int = 2
    cache: bool = True
    cache_dir: str | None = None
    loader: Literal["auto", "workers", "resident"] = "auto"
    augment_on: Literal["auto", "workers", "device", "kornia"] = "auto"
    mask_regions: list[str] | None = None
    official_split: str | None = None
    fold: int = 0
    on_leak: Literal["report", "refuse"] = "report"
    sampler: Literal["shuffle", "balanced"] = "shuffle"
    exclude: str | None = None
    field_of_view: str = "full"
    view_quantile: float | Literal["auto"] = VIEW_QUANTILE
    frame_swap: float = 0.0
    clean_frame: Literal["none", "inpaint"] = "none"
    augment: Literal["standard", "randaugment", "trivialaugment"] = "standard"
    unlabeled_dir: str | None = None

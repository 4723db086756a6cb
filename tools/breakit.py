"""Break each behaviour on purpose and watch its test fail: `make breakit` (outside the default suite).

Each entry names a behaviour, the one-line change in src/ that breaks it, and the test that must then fail. For each
entry the script copies src/, tests/ and the files tests read into a temporary folder, applies the change there (the
working tree is never touched), runs the named test against the copy (slow-marked ones too) and records how it
failed: "caught" only when the test failed on an assertion (or on the error the entry names), "crashed" when it
failed another way or in a fixture. It prints the table and exits non-zero unless every entry was caught.

The trained runs and bundles the tests share (conftest.SHARED_FIXTURES) are built once from the unbroken code; an
entry is handed each of them whose build never loaded the mutated module (--rebuild: every entry builds its own).

    python tools/breakit.py                 # every entry
    python tools/breakit.py --only leak     # entries whose behaviour or test mentions "leak"
    python tools/breakit.py --first 30      # the newest entries
    python tools/breakit.py --entries 3 7-12  # entries by number
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    behaviour: str
    file: str  # under src/kvasir_mobileone/
    original: str  # must occur exactly once in the file
    broken: str
    test: str  # pytest node id
    expect: str | None = None  # the error the test fails with when it catches this, if not an assertion


HK = "tests/test_hyper_kvasir.py::"
I8 = "tests/test_int8.py::"
AU = "tests/test_audit.py::"
CLI = "tests/test_cli.py::"
IM = "tests/test_imbalance.py::"
FV = "tests/test_field_of_view.py::"
MO = "tests/test_mobile.py::"
SE = "tests/test_serve.py::"
UN = "tests/test_uncertainty.py::"
VI = "tests/test_video.py::"
# every entry builds its shared fixtures afresh or from the snapshot (never from the suite's disk cache), and no test
# fails on time: a mutation may slow a test down without breaking what it claims (tests/budget.py)
QUIET = {"KVASIR_TEST_CACHE": "off", "KVASIR_TEST_BUDGET": "off"}
# source files a build reads as text instead of importing -> the module that reads them (the card embeds the example)
READ_AS_TEXT = {"kvasir_mobileone.deploy.onnxruntime_example": "kvasir_mobileone.deploy.card"}
RE = "tests/test_recipe.py::"
LI = "tests/test_live.py::"
MUTATIONS = [
    # issue 50: the page's Live tab, the live benchmark, the measured lag, the annotated output
    Mutation(
        "the Live tab counts the camera's frames that never reached the model (skipped)",
        "deploy/serve.py",
        "            self.skipped += max(0, round((arrived - self.last) / LIVE_EVERY_S) - 1)\n",
        "            self.skipped += 0\n",
        LI + "test_the_live_tab_answers_camera_frames_as_they_come",
    ),
    Mutation(
        "a camera silent for LIVE_RESTART_S and started again begins a new examination",
        "deploy/serve.py",
        "        if session is None or arrived - session.last > LIVE_RESTART_S:\n",
        "        if session is None:\n",
        LI + "test_the_live_tab_answers_camera_frames_as_they_come",
    ),
    Mutation(
        "the Live tab's answer is a live region (read out when it changes)",
        "deploy/page_style.py",
        '    for (const id of ["message", "video-message", "live-answer"]) {\n',
        '    for (const id of ["message", "video-message"]) {\n',
        SE + "test_the_live_tab_in_a_browser_with_a_fake_camera",
    ),
    Mutation(
        "the benchmark's live row judges p95 against one frame interval",
        "bench/live.py",
        'latency["p95"] is not None and latency["p95"] <= interval,\n',
        'latency["p95"] is not None and latency["p95"] >= interval,\n',
        "tests/test_benchmark.py::test_benchmark_writes_side_by_side_ratios",
    ),
    Mutation(
        "the annotated output keeps the frames' own times",
        "deploy/live.py",
        "                pts = max(int(round(t * 1000)), self.last_pts + 1)\n",
        "                pts = self.last_pts + 40\n",
        LI + "test_watch_sends_the_frames_on_with_the_live_answer_drawn_over_them",
    ),
    Mutation(
        "the annotated output's band is in the live state's colour",
        "deploy/live.py",
        "caption, self.colours[answer.live])\n",
        "caption, self.colours[answer.top])\n",
        LI + "test_watch_sends_the_frames_on_with_the_live_answer_drawn_over_them",
    ),
    Mutation(
        "a change's lag is the time to the first frame inside it that carries its label",
        "evaluation/examination.py",
        '        hits = inside[labels[inside] == row["label"]]\n',
        '        hits = inside[labels[inside] != ""]\n',
        LI + "test_the_lag_of_a_change_is_the_time_to_the_first_frame_that_carries_it",
    ),
    Mutation(
        "watch smooths with its own default --stay (0.9, chosen from the measured lag)",
        "commands/watch.py",
        "    stay: float = LIVE_STAY,\n",
        "    stay: float = 0.99,\n",
        LI + "test_watch_classifies_a_udp_stream_as_it_comes_and_ends_when_it_stops",
    ),
    Mutation(
        "the annotated file is renamed into place only when whole (nothing sent: no file)",
        "deploy/live.py",
        "            if self.error is None and self.written:\n",
        "            if True:\n",
        LI + "test_watch_sends_the_frames_on_with_the_live_answer_drawn_over_them",
    ),
    Mutation(
        "a live frame's time is counted from the first frame (a capture clock may be the machine's uptime)",
        "deploy/live.py",
        "t = raw - first  # seconds since the first frame",
        "t = raw  # seconds since the first frame",
        LI + "test_times_count_from_the_first_frame_whatever_the_source_clock",
    ),
    Mutation(
        "Ctrl-C ends the watch between two frames, with its summary",
        "deploy/live.py",
        "                if mailbox.interrupted:  # a frame taken now is left: skipped, as one that came too late\n",
        "                if False:\n",
        LI + "test_ctrl_c_ends_the_watch_cleanly_with_its_summary",
    ),
    # issue 50 (in part): `kvasir watch`, a live feed
    Mutation(
        "a frame that arrives while the model is busy replaces the waiting one (never queued)",
        "deploy/live.py",
        "            self.frame = frame\n",
        "            self.frame = self.frame or frame\n",
        LI + "test_a_frame_that_arrives_while_the_model_is_busy_replaces_the_waiting_one",
    ),
    Mutation(
        "the live label is the forward filter's, not the frame's own",
        "deploy/live.py",
        "        self.belief = (self.belief @ transitions(states, self.stay, 1 / dt)) * e\n",
        "        self.belief = e.copy()\n",
        LI + "test_the_live_label_is_filtered_one_odd_frame_does_not_flip_it",
    ),
    Mutation(
        "a stream that stops ends the watch with a message saying it stalled",
        "deploy/live.py",
        '                    why = mailbox.ended or f"the stream stalled: no frame for {stall_s:g} s (--stall_s)"\n',
        '                    why = mailbox.ended or "the stream ended"\n',
        LI + "test_watch_classifies_a_udp_stream_as_it_comes_and_ends_when_it_stops",
    ),
    # issue 49: the training recipe (EMA, Mixup/CutMix, drop path, RandAugment, a teacher, unlabeled frames)
    Mutation(
        "a teacher named by timm loads its weights file whole, head included",
        "models/loading.py",
        "            timm.models.load_checkpoint(network, weights, strict=True)\n",
        "            pass\n",
        RE + "test_a_teacher_named_by_timm_loads_its_weights_head_included",
    ),
    Mutation(
        "unlabeled frames are augmented once: on the device with the labeled batch when it is augmented there",
        "data/datamodule.py",
        '            train_augmentations(self.data.augment) if self.augment_on == "workers" else None,\n',
        "            train_augmentations(self.data.augment),\n",
        RE + "test_drop_path_and_randaugment_are_switched_on_where_asked",
    ),
    Mutation(
        "--model.ema keeps an average of the weights in the checkpoint",
        "commands/fit.py",
        "    if model.ema:  # validation",
        "    if False:  # validation",
        RE + "test_the_ema_weights_are_the_ones_validated_tested_and_exported",
    ),
    Mutation(
        "the test at the end of fit tests the average, not the trained weights",
        "models/trainer.py",
        "        if trainer.state.fn == TrainerFn.FITTING:\n",
        "        if True:\n",
        RE + "test_the_ema_weights_are_the_ones_validated_tested_and_exported",
    ),
    Mutation(
        "Mixup/CutMix's soft targets are what the training loss learns",
        "models/classifier.py",
        "            images, labels = self.mix(images, targets)\n",
        "            pass\n",
        RE + "test_mixup_and_cutmix_targets_are_soft_and_the_loss_learns_them",
    ),
    Mutation(
        "--model.drop_path reaches the backbone",
        "models/backbone.py",
        "            return _create(name, num_classes, pretrained, weights, drop_path_rate=drop_path)\n",
        "            return _create(name, num_classes, pretrained, weights)\n",
        RE + "test_drop_path_and_randaugment_are_switched_on_where_asked",
    ),
    Mutation(
        "--data.augment randaugment adds RandAugment in the workers",
        "data/transforms.py",
        '    "randaugment": lambda: [T.RandAugment(num_ops=2, magnitude=9)],\n',
        '    "randaugment": lambda: [],\n',
        RE + "test_drop_path_and_randaugment_are_switched_on_where_asked",
    ),
    Mutation(
        "the teacher's answers reach the training loss",
        "models/classifier.py",
        "            loss = (1 - weight) * loss + weight * distilled\n",
        "            loss = loss + 0 * distilled\n",
        RE + "test_the_teachers_answers_on_the_students_images_reach_the_loss",
    ),
    Mutation(
        "the teacher sees the student's images in its own input size",
        "models/distill.py",
        "        if pixels.shape[-1] != size or pixels.shape[-2] != size:\n",
        "        if False:\n",
        RE + "test_the_teachers_answers_on_the_students_images_reach_the_loss",
    ),
    Mutation(
        "the unlabeled frames' distillation term joins the loss",
        "models/classifier.py",
        "        return unlabeled if loss is None else loss + unlabeled\n",
        "        return loss\n",
        RE + "test_the_teachers_answers_on_the_students_images_reach_the_loss",
    ),
    Mutation(
        "an unlabeled frame that is a near-duplicate of a val or test image is left out",
        "data/unlabeled.py",
        "            if bits[nearest] <= near_duplicate_bits:\n",
        "            if bits[nearest] < 0:\n",
        RE + "test_unlabeled_frames_are_checked_counted_and_learn_the_teachers_answers",
    ),
    Mutation(
        "unlabeled frames need a teacher",
        "commands/fit.py",
        "        if data.unlabeled_dir and not model.teacher:  # said before a run folder is made\n",
        "        if False:\n",
        RE + "test_unlabeled_frames_are_checked_counted_and_learn_the_teachers_answers",
        "AttributeError: 'NoneType' object has no attribute 'logits'",  # training crashes where fit should refuse
    ),
    # issue 48: "I don't know" that holds on real frames
    Mutation(
        "a negative-capable score's odds are taken on its additive scale",
        "answers.py",
        '    "relative_mahalanobis": 0.5,\n',
        "",
        "tests/test_uncertainty.py::test_the_outside_odds_grow_with_every_detectors_score_and_are_one_at_its_threshold",
    ),
    Mutation(
        "the report measures every detector on the classes not trained (--uncertainty.near_dir)",
        "evaluation/uncertainty.py",
        "    if near is not None and len(near):\n",
        "    if False:\n",
        "tests/test_uncertainty.py::test_the_detector_tells_held_out_classes_and_non_endoscopy_from_the_test_images",
    ),
    Mutation(
        "Gradio's empty outputs get a valid name (no aria-label on a plain div)",
        "deploy/page_style.py",
        '      d.setAttribute("role", "img"); d.setAttribute("aria-label", "Nothing here yet"); });',
        "      });",
        "tests/test_serve.py::test_the_video_tab_in_a_browser",
    ),
    Mutation(
        'the drop zone\'s "- or -" has AA contrast',
        "deploy/page_style.py",
        "#images .or, #video .or {{ color: #4b5563 !important; }}\n",
        "",
        "tests/test_serve.py::test_the_page_in_a_browser",
    ),
    Mutation(
        "outlier exposure's term reaches the training loss",
        "models/classifier.py",
        "            loss = loss + exposure * uniform\n",
        "            loss = loss\n",
        "tests/test_uncertainty.py::test_outlier_exposure_teaches_the_network_to_spread_its_answer_on_images_that_are_not_endoscopy",
    ),
    Mutation(
        "the selected tab's label has AA contrast",
        "deploy/page_style.py",
        'button[role="tab"][aria-selected="true"] {{ color: {PRIMARY} !important; }}\n',
        "",
        "tests/test_serve.py::test_the_page_in_a_browser",
    ),
    Mutation(
        "at phone width the answers table keeps the columns that answer, without sideways scrolling",
        "deploy/page_style.py",
        "  #results th:nth-child(n+3), #results td:nth-child(n+3), #segments th:nth-child(n+4), "
        "#segments td:nth-child(n+4) {{",
        "  #nothing {{",
        "tests/test_serve.py::test_the_page_in_a_browser",
    ),
    Mutation(
        "the timeline image has a name",
        "deploy/page_style.py",
        '      if (i.alt !== "Timeline of the examination") i.alt = "Timeline of the examination"; });',
        "      });",
        "tests/test_serve.py::test_the_video_tab_in_a_browser",
    ),
    Mutation(
        "a frame with no picture is outside with or without a detector (predict, the page, the video)",
        "deploy/predict.py",
        '        if b:\n            j["answer"], j["outside"] = OUTSIDE, True\n',
        '        if False:\n            j["answer"], j["outside"] = OUTSIDE, True\n',
        "tests/test_uncertainty.py::test_a_bundle_without_a_detector_still_calls_a_frame_with_no_picture_outside",
    ),
    Mutation(
        "no picture: every channel spans fewer than 16 levels",
        "answers.py",
        "    return (high - low < NO_PICTURE_RANGE).all(axis=1)\n",
        "    return (high - low > NO_PICTURE_RANGE).all(axis=1)\n",
        "tests/test_uncertainty.py::test_a_frame_with_no_picture_is_outside_by_definition_and_a_frame_with_one_is_not",
    ),
    Mutation(
        "no picture is judged inside the model's view only",
        "answers.py",
        "    seen = visible[::4, ::4] if visible is not None else np.ones(pixels.shape[1:3], bool)\n",
        "    seen = np.ones(pixels.shape[1:3], bool)\n",
        "tests/test_uncertainty.py::test_a_frame_with_no_picture_is_outside_by_definition_and_a_frame_with_one_is_not",
    ),
    Mutation(
        "the input check flags an image beside the network's detector",
        "answers.py",
        "        flags = self.outside(scores, checked)\n",
        "        flags = self.outside(scores, None)\n",
        "tests/test_uncertainty.py::test_the_input_check_flags_what_the_network_maps_inside_its_classes_at_the_stated_rate_for_the_pair",
    ),
    Mutation(
        "the pair's thresholds split the false-alarm rate",
        "evaluation/uncertainty.py",
        "    rate_each = config.ood_false_alarm / 2 if paired else config.ood_false_alarm\n",
        "    rate_each = config.ood_false_alarm\n",
        "tests/test_uncertainty.py::test_the_input_check_flags_what_the_network_maps_inside_its_classes_at_the_stated_rate_for_the_pair",
    ),
    Mutation(
        "near-duplicate groups are the conformal threshold's units",
        "evaluation/uncertainty.py",
        "    if groups is None or len(np.unique(groups)) == n:\n",
        "    if True:\n",
        "tests/test_uncertainty.py::test_group_conformal_counts_near_duplicate_groups_as_the_units",
    ),
    Mutation(
        "the page shows no heatmap for an input outside the training data",
        "deploy/serve.py",
        'overlay = a["frame"] if prediction.answer == OUTSIDE else over_frame(a["frame"], h)',
        'overlay = over_frame(a["frame"], h)',
        "tests/test_uncertainty.py::test_a_frame_gets_the_same_answer_as_a_file_in_a_video_on_the_page_and_through_the_cards_snippet",
    ),
    Mutation(
        "the card's snippet calls a frame with no picture outside",
        "deploy/onnxruntime_example.py",
        'answer = "outside the training data" if no_picture else names[int(probs.argmax())]',
        "answer = names[int(probs.argmax())]",
        "tests/test_uncertainty.py::test_a_bundle_without_a_detector_still_calls_a_frame_with_no_picture_outside",
    ),
    Mutation(
        "a video frame's no-picture flag is the still image's rule",
        "deploy/examination.py",
        "            blank = [j.no_picture is True for j in judged]\n",
        "            blank = [False for j in judged]\n",
        "tests/test_uncertainty.py::test_a_frame_gets_the_same_answer_as_a_file_in_a_video_on_the_page_and_through_the_cards_snippet",
    ),
    # issue 46: the house, second step
    Mutation(
        "predict's CSV header is the Prediction row's columns, every one of them",
        "deploy/predict.py",
        "    header = Prediction.columns(top_k)\n",
        "    header = Prediction.columns(top_k)[:-1]\n",
        "tests/test_deploy.py::test_one_schema_drives_the_csv_the_json_and_the_page",
    ),
    Mutation(
        "the page's table takes its columns from the Prediction row",
        "deploy/serve.py",
        '    return ["file", *[title for _, _, title in Prediction.page_columns(top_k)], "ms/image"]',
        '    return ["file", "answer", "top class", "class 2", "ms/image"]',
        "tests/test_deploy.py::test_one_schema_drives_the_csv_the_json_and_the_page",
    ),
    Mutation(
        "the passes that fit the detector serve their images unaugmented, whatever the split",
        "data/datamodule.py",
        'every one of them."""\n        return self.loader(self.evaluate, training=False)',
        'every one of them."""\n        return self.loader(self.evaluate)',
        "tests/test_gpu_path.py::test_an_evaluated_split_is_served_unaugmented_with_the_models_class_indices",
    ),
    Mutation(
        "a part of the manifest served for evaluation keeps the model's class indices",
        "data/datamodule.py",
        "        self.class_names = list(class_names) if class_names else class_names_of(rows)",
        "        self.class_names = class_names_of(rows)",
        "tests/test_gpu_path.py::test_an_evaluated_split_is_served_unaugmented_with_the_models_class_indices",
    ),
    Mutation(
        "macro-F1 is 2TP / (2TP + FP + FN) averaged over the classes present, in the one function both use",
        "metrics.py",
        "    f1 = 2 * tp / (2 * tp + wrong).clip(min=1)",
        "    f1 = tp / (tp + wrong).clip(min=1)",
        "tests/test_metrics.py::test_metrics_match_sklearn",
    ),
    Mutation(
        "every command's --help summary is a whole sentence",
        "commands/prepare.py",
        '    """Decode every image once into the cache that fit reads.',
        '    """Decode every image once into the cache that fit',
        CLI + "test_every_commands_help_summary_is_a_whole_sentence",
    ),
    # issue 34: a remedy that holds on real frames
    Mutation(
        "--data.view_quantile auto takes a view only when the marks left inside do not depend on the class",
        "data/field_of_view.py",
        "        if p_value >= VIEW_ALPHA:",
        "        if p_value >= 0:",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "the stricter views auto tries leave out every overlay mark, not only those that stay put",
        "data/field_of_view.py",
        '        if overlays == "any":',
        '        if overlays == "never":',
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "auto's test counts the marks left inside the view, per image",
        "data/field_of_view.py",
        "            inside = np.unpackbits(packed, count=h * w).reshape(h, w) & visible",
        "            inside = np.unpackbits(packed, count=h * w).reshape(h, w)",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "auto's test finds marks of one size in places that tell the class (it counts them per quarter too)",
        "data/field_of_view.py",
        "            left[i] = [np.count_nonzero(inside), *(np.count_nonzero(inside[r, c]) "
        "for r in rows for c in cols)]",
        "            left[i] = [np.count_nonzero(inside)] * 5",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "auto's five counts are one test at its level (the largest statistic against permuted labels)",
        "data/field_of_view.py",
        "    return (1 + exceed) / (1 + permutations)",
        "    return min(__import__('scipy.stats').stats.kruskal(*(c[codes == k] for k in range(len(classes)))).pvalue "
        "for c in varying.T)",
        FV + "test_autos_test_finds_a_dependence_where_there_is_none_no_more_often_than_its_level",
    ),
    Mutation(
        "auto's p compares the statistic with the labels permuted",
        "data/field_of_view.py",
        "    exceed = sum(largest_h(rng.permutation(codes)) >= observed * (1 - 1e-9) for _ in range(permutations))",
        "    exceed = sum(largest_h(codes) >= observed * (1 - 1e-9) for _ in range(permutations))",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "auto refuses, naming each view tried, when no view wide enough passes its test",
        "data/field_of_view.py",
        "        if visible.mean() < min_view:",
        "        if visible.mean() < 0:",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "a swapped frame leaves no ghost of the image's own outline and icons (their fringe is filled too)",
        "marks.py",
        "        frame | large_overlays(overlay, frame), EIGHT_NEIGHBOURS, iterations=fringe_of(pixels)",
        "        frame | large_overlays(overlay, frame), EIGHT_NEIGHBOURS, iterations=0",
        FV + "test_swap_frame_takes_the_donors_outline_and_keeps_the_tissue",
    ),
    Mutation(
        "the baseline's weights as a map read the frame and overlays the model sees",
        "evaluation/audit.py",
        "    marked = (frame_pixels(image) | overlay_pixels(image)).astype(np.float64)",
        "    marked = np.zeros(image.shape[:2])",
        FV + "test_the_swap_has_a_same_class_control_and_the_audit_proposes_one_fit_line",
    ),
    Mutation(
        "--data.clean_frame inpaint: the model input inpaints the marks inside the view (predict, audit, export)",
        "images.py",
        "            pixels = clean_marks(np.asarray(pixels, dtype=np.uint8), self.visible())",
        "            pixels = np.asarray(pixels, dtype=np.uint8)",
        FV + "test_clean_frame_inpaints_the_marks_inside_the_view_wherever_the_model_looks",
    ),
    Mutation(
        "the card's onnxruntime example refuses a model whose input needs the clean-up",
        "deploy/onnxruntime_example.py",
        'if spec.get("clean"):  # --data.clean_frame',
        "if False:  # --data.clean_frame",
        FV + "test_clean_frame_inpaints_the_marks_inside_the_view_wherever_the_model_looks",
    ),
    Mutation(
        "--data.clean_frame reaches the model input that fit stores",
        "commands/fit.py",
        '    model_input = dataclasses.replace(model_input, clean="" if data.clean_frame == "none" else '
        "data.clean_frame)",
        "    model_input = dataclasses.replace(model_input)",
        FV + "test_clean_frame_inpaints_the_marks_inside_the_view_wherever_the_model_looks",
    ),
    Mutation(
        "training and testing images go through the model input's last steps (clean-up, hidden pixels)",
        "data/datamodule.py",
        "            skip_unreadable=training,\n            prepare=self.model_input.prepare,",
        "            skip_unreadable=training,\n            prepare=None,",
        FV + "test_clean_frame_inpaints_the_marks_inside_the_view_wherever_the_model_looks",
    ),
    Mutation(
        "a model with clean-up is not exported to Core ML, whose graph holds the preprocessing",
        "commands/export.py",
        '    if "coreml" in formats and model_input.clean:',
        "    if False:",
        FV + "test_clean_frame_inpaints_the_marks_inside_the_view_wherever_the_model_looks",
    ),
    Mutation(
        "a swap leaves the tissue around a highlight as it is (small overlay marks grow by one pixel only)",
        "marks.py",
        "    large = np.bincount(labels.ravel(), minlength=n + 1) >= fringe * fringe",
        "    large = np.bincount(labels.ravel(), minlength=n + 1) >= 0",
        FV + "test_swap_frame_takes_the_donors_outline_and_keeps_the_tissue",
    ),
    Mutation(
        "a swap pastes the donor's outline with the one pixel of blur its edge has",
        "data/frame.py",
        "    given = ndimage.binary_dilation(frame_pixels(donor) | overlay_pixels(donor), EIGHT_NEIGHBOURS)",
        "    given = frame_pixels(donor) | overlay_pixels(donor)",
        FV + "test_swap_frame_takes_the_donors_outline_and_keeps_the_tissue",
    ),
    Mutation(
        "a run not trained inside the view chosen from the data is proposed that view",
        "evaluation/shortcut_audit.py",
        '        words += ["--data.field_of_view", "common", "--data.view_quantile", AUTO]',
        '        words += ["--data.field_of_view", "common"]',
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "a run inside the chosen view that still follows, or with no view wide enough, is proposed the clean-up",
        "evaluation/shortcut_audit.py",
        "    if chosen or refused:",
        "    if chosen:",
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "with no view wide enough, the proposed clean-up is of the whole input (no view fit would refuse)",
        "evaluation/shortcut_audit.py",
        "        if not viewed and not too_small:  # else it cleans the whole input, as no view is wide enough",
        "        if not viewed:  # else it cleans the whole input, as no view is wide enough",
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "auto says when even its widest view is too small (not that the frame tells the class everywhere)",
        "data/field_of_view.py",
        "            if not levels:",
        "            if False:",
        FV + "test_a_view_chosen_from_the_data_leaves_out_the_moving_overlays_that_tell_the_class",
    ),
    Mutation(
        "a run inside the chosen view whose predictions do not follow is proposed nothing more",
        "evaluation/shortcut_audit.py",
        "    if trained.model_input.clean or not (follows or open_shortcut) or (chosen and not follows):",
        "    if trained.model_input.clean or not (follows or open_shortcut):",
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "the proposed view turns off a frame swap the run had",
        "evaluation/shortcut_audit.py",
        '        words += ["--data.frame_swap", "0"] if trained.data.frame_swap else []',
        "        words += []",
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "a run with a resident loader is proposed the workers the clean-up needs",
        "evaluation/shortcut_audit.py",
        '        words += ["--data.loader", "workers"] if trained.data.loader == "resident" else []  # the clean-up',
        "        words += []  # the clean-up",
        FV + "test_the_proposal_follows_what_the_run_already_had",
    ),
    Mutation(
        "--data.frame_swap gives training images another image's frame",
        "data/datamodule.py",
        "            if self.frame_swap and float(torch.rand(())) < self.frame_swap:",
        "            if False:",
        FV + "test_frame_swap_gives_training_images_another_frame_and_is_checked",
    ),
    Mutation(
        "--data.frame_swap outside [0, 1] is refused",
        "data/datamodule.py",
        "        if not 0 <= data.frame_swap <= 1:",
        "        if data.frame_swap < 0:",
        FV + "test_frame_swap_gives_training_images_another_frame_and_is_checked",
    ),
    Mutation(
        "the swap's control pastes a frame of the image's own class",
        "evaluation/audit.py",
        "    control = np.stack([model_input.prepare(swap_frame(raw[i], raw[j])) for i, j in enumerate(same)])",
        "    control = np.stack([model_input.prepare(swap_frame(raw[i], raw[j])) for i, j in enumerate(donors)])",
        FV + "test_the_plain_run_follows_the_swapped_frame_and_the_masked_run_does_not",
    ),
    Mutation(
        "the proposed fit line trains on the same split",
        "evaluation/shortcut_audit.py",
        '    words = ["kvasir", "fit", "--config", str(home.config), "--data.manifest", str(home.manifest)]',
        '    words = ["kvasir", "fit", "--config", str(home.config)]',
        FV + "test_the_swap_has_a_same_class_control_and_the_audit_proposes_one_fit_line",
    ),
    # issue 35: examination videos
    Mutation(
        "the decoder thread stops, and closes the video, when its reader stops early",
        "deploy/video.py",
        "        stop.set()",
        "        pass",
        VI + "test_the_decoder_thread_stops_when_its_reader_does",
    ),
    Mutation(
        "without a detector a frame is outside only when blank",
        "deploy/timeline.py",
        "    powered = np.where(odds > 0, np.maximum(odds, 1e-300) ** ood_weight, 0.0)",
        "    powered = np.maximum(odds, 1e-300) ** ood_weight",
        VI + "test_without_a_detector_an_unsure_model_is_never_outside",
    ),
    Mutation(
        "a blank frame (no picture) is outside the training data",
        "answers.py",
        "    return (high - low < NO_PICTURE_RANGE).all(axis=1)",
        "    return np.zeros(len(low), dtype=bool)",
        VI + "test_blank_frames_are_outside_and_the_annotated_video_shows_every_frame",
    ),
    Mutation(
        "the timeline puts a blank frame in the outside state whatever its class probabilities",
        "deploy/timeline.py",
        "        q = np.where(np.asarray(blank, bool), 1 - FLOOR, q)",
        "        q = q",
        VI + "test_flagged_frames_are_a_state_of_their_own_and_short_runs_merge",
    ),
    Mutation(
        "--ood_weight is the exponent of the detector's odds (0 ignores the detector)",
        "deploy/timeline.py",
        "    powered = np.where(odds > 0, np.maximum(odds, 1e-300) ** ood_weight, 0.0)",
        "    powered = np.where(odds > 0, np.maximum(odds, 1e-300), 0.0)",
        VI + "test_flagged_frames_are_a_state_of_their_own_and_short_runs_merge",
    ),
    Mutation(
        "in the outside state the class probabilities say nothing (a score just past the threshold keeps a sure class)",
        "deploy/timeline.py",
        "    e[:, k] = q / k",
        "    e[:, k] = q",
        VI + "test_flagged_frames_are_a_state_of_their_own_and_short_runs_merge",
    ),
    Mutation(
        "Viterbi weighs the transitions: noisy frames do not split a segment",
        "deploy/timeline.py",
        "        candidates = score[:, None] + log_m",
        "        candidates = score[:, None] + 0 * log_m",
        VI + "test_the_hmm_recovers_noisy_segments_and_filters_causally",
    ),
    Mutation(
        "the detector's score counts as graded odds: a photo stretch in a video is outside",
        "answers.py",
        "                    else np.maximum(s, 1e-12) / max(threshold, 1e-12)",
        "                    else np.ones(len(s))",
        VI + "test_the_smoothed_timeline_finds_the_boundaries_and_switches_less_at_no_cost",
    ),
    Mutation(
        "a video that ends before its stated duration is said to be truncated",
        "deploy/video.py",
        "        if info.stopped is None and duration and info.decoded and last < duration - 3 / rate:",
        "        if False:",
        VI + "test_videos_that_cannot_be_read_are_said_in_words",
    ),
    Mutation(
        "the annotated video has every frame of the video, not only the classified ones",
        "deploy/annotate.py",
        '                j = max(0, int(np.searchsorted(indices, i, side="right")) - 1)',
        '                j = max(0, int(np.searchsorted(indices, i, side="right")) - 1)\n'
        "                if i not in indices:\n"
        "                    continue",
        VI + "test_blank_frames_are_outside_and_the_annotated_video_shows_every_frame",
    ),
    Mutation(
        "--ood_weight out of range is refused before a video is decoded",
        "deploy/timeline.py",
        "    if not 0 <= ood_weight <= 10:",
        "    if ood_weight > 10:",
        VI + "test_blank_frames_are_outside_and_the_annotated_video_shows_every_frame",
    ),
    Mutation(
        "the video tab's live region reads every segment",
        "deploy/serve.py",
        "{r['class']}\" for r in rows",
        "{r['class']}\" for r in rows[:0]",
        SE + "test_the_video_tab_through_gradio_client",
    ),
    Mutation(
        "the video tab's summary is a live region (set when the tab is first drawn)",
        "deploy/page_style.py",
        '    for (const id of ["message", "video-message", "live-answer"]) {',
        '    for (const id of ["message", "live-answer"]) {',
        SE + "test_the_video_tab_in_a_browser",
    ),
    # issue 33: "I don't know": out-of-distribution flags, abstention, prediction sets
    Mutation(
        "conformal sets hold as many classes as the coverage needs, not the top class alone",
        "answers.py",
        "        sets.append([int(c) for c in order if qhat is None or s[c] <= qhat])",
        "        sets.append([int(order[0])])",
        UN + "test_conformal_sets_cover_as_promised_within_their_interval",
    ),
    Mutation(
        "a confident model gets sets of one: a class's APS score leaves out its own probability",
        "answers.py",
        "    before = np.cumsum(ranked, axis=1) - ranked",
        "    before = np.cumsum(ranked, axis=1)",
        UN + "test_a_confident_right_model_gets_sets_of_one_class",
    ),
    Mutation(
        "too few calibration images give no quantile, said so, not an index error",
        "evaluation/uncertainty.py",
        "        return None if rank > n else float(np.sort(scores)[rank - 1])",
        "        return float(np.sort(scores)[min(rank, n) - 1])",
        UN + "test_too_few_val_images_set_no_threshold_and_say_so",
    ),
    Mutation(
        "abstention bounds the error of the answered images, not their observed error",
        "evaluation/uncertainty.py",
        "    per_step = 1 - (1 - level) / steps",
        "    per_step = 0.5",
        UN + "test_abstention_keeps_the_error_of_the_answered_below_its_target",
    ),
    Mutation(
        "kNN compares directions: features are L2-normalized before the cosine similarity",
        "answers.py",
        "    similarity = normalized(features) @ np.asarray(bank, np.float64).T",
        "    similarity = np.asarray(features, np.float64) @ np.asarray(bank, np.float64).T",
        UN + "test_each_detector_scores_far_points_above_near_ones",
    ),
    Mutation(
        "an image scoring above the threshold is flagged outside the training data (not below it)",
        "answers.py",
        "            hit = np.asarray(s) > threshold if threshold is not None",
        "            hit = np.asarray(s) < threshold if threshold is not None",
        UN + "test_predict_flags_the_five_inputs_and_the_bundle_answers_as_the_run",
    ),
    Mutation(
        "the bundle's ONNX graph gives predict the features the detector reads",
        "deploy/runtime.py",
        "        return found[0], found[1] if len(found) > 1 else None",
        "        return found[0], None",
        UN + "test_predict_flags_the_five_inputs_and_the_bundle_answers_as_the_run",
    ),
    Mutation(
        "the card's plain-onnxruntime code flags what predict flags",
        "deploy/onnxruntime_example.py",
        '    outside = score is not None and rule["ood_threshold"] is not None and score > rule["ood_threshold"]',
        '    outside = score is not None and rule["ood_threshold"] is not None and score < rule["ood_threshold"]',
        UN + "test_the_cards_plain_onnxruntime_code_answers_as_predict",
    ),
    Mutation(
        "the page's live region reads every answer out, not only their count",
        "deploy/serve.py",
        "        message += \"\".join(f\"\\n- {a['file']}: {answer_text(a['prediction'])}\" for a in good)\n",
        "",
        SE + "test_the_page_through_gradio_client",
    ),
    Mutation(
        "the page gives file sizes in the upload list's units (MB of 1024 x 1024 bytes)",
        "deploy/serve.py",
        '    return f"{size / MB:.1f} MB"',
        '    return f"{size / 1e6:.1f} MB"',
        SE + "test_the_page_through_gradio_client",
    ),
    Mutation(
        "the page says which files will not be classified as soon as they are dropped",
        "deploy/serve.py",
        "            files.change(handlers.check_uploads, files, message, queue=False)\n",
        "",
        SE + "test_the_page_in_a_browser",
    ),
    Mutation(
        "the gallery's label sits above the heatmaps at phone width, not over them",
        "deploy/page_style.py",
        '#heatmaps label[data-testid="block-label"], #frames label[data-testid="block-label"] '
        "{{ position: static !important; }}",
        "",
        SE + "test_the_page_in_a_browser",
    ),
    # issue 31: one model-input object, every run file through runs.py, extras
    Mutation(
        "two models that agree on every image get an interval with a width, not a point",
        "evaluation/intervals.py",
        "    if only_a == only_b == 0:",
        "    if False:",
        "tests/test_metrics.py::test_two_models_that_agree_everywhere_get_an_honest_interval_not_a_point",
    ),
    Mutation(
        "the overlay colour rules live in pixels.py alone",
        "data/regions.py",
        "    green = pixel_rules.green(pixels)",
        "    green = (pixels[..., 1] > pixels[..., 0] + 40) & (pixels[..., 1] > pixels[..., 2] + 40)",
        "tests/test_structure.py::test_the_pixel_colour_rules_live_in_data_pixels_alone",
    ),
    Mutation(
        "a renamed flag works for one release, with a note",
        "cli.py",
        "            arg = renamed[flag] + equals + value",
        "            pass",
        "tests/test_cli.py::test_renamed_flags_keep_working_for_one_release_with_a_note",
    ),
    Mutation(
        "a checkpoint of 0.1.0 keeps the region names it recorded apart",
        "models/classifier.py",
        '        if hparams.get("mask_regions") and not model_input.mask_regions:',
        "        if False:",
        "tests/test_model.py::test_a_checkpoint_and_a_bundle_written_by_release_0_1_0_keep_loading",
    ),
    Mutation(
        "a model input reads a frame as 0.1.0 did: hidden pixels black",
        "images.py",
        "        return hide(pixels, self.hidden())",
        "        return pixels",
        "tests/test_model.py::test_a_checkpoint_and_a_bundle_written_by_release_0_1_0_keep_loading",
    ),
    Mutation(
        "a field of view whose bits do not match their SHA-256 is refused",
        "images.py",
        "        if recorded and recorded != model_input.view_sha256:",
        "        if False:",
        "tests/test_model.py::test_the_model_input_description_round_trips_and_refuses_a_damaged_view",
    ),
    Mutation(
        "a checkpoint without a model-input description is refused in words",
        "models/classifier.py",
        '        if "normalization" not in hparams:',
        "        if False:",
        "tests/test_model.py::test_a_checkpoint_without_a_model_input_description_is_refused_in_words",
        expect="KeyError",  # the description is read without the check: a KeyError, not the sentence
    ),
    Mutation(
        "no run file is spelled outside runs.py",
        "evaluation/shortcut_audit.py",
        "        folder.frame_maps_png,",
        '        out_dir / "frame_maps.png",',
        "tests/test_structure.py::test_run_files_are_spelled_in_runs_py_alone",
    ),
    Mutation(
        "label-issues names its missing extra before any work",
        "commands/label_issues.py",
        '    require("cleanlab", "label-issues")\n',
        "",
        "tests/test_extras.py::test_a_missing_extra_is_named_in_one_line",
        expect="kvasir_mobileone.runs.RunError",  # without the early check, the missing folder is found first
    ),
    Mutation(
        "no module imports an extra's package when it is imported",
        "deploy/explain.py",
        "from kvasir_mobileone.extras import require\n",
        "from pytorch_grad_cam import GradCAM  # noqa: F401\nfrom kvasir_mobileone.extras import require\n",
        "tests/test_extras.py::test_every_module_of_the_package_imports_without_the_extras",
    ),
    # issue 36: a compiled training step with static shapes
    Mutation(
        "the last, smaller training batch runs eager (no recompile)",
        "models/classifier.py",
        "        if self.compiled and not (self.training and self.static_batch in (None, images.shape[0])):",
        "        if self.compiled and not self.training:",
        "tests/test_gpu_path.py::test_compiled_training_is_one_static_graph_and_evaluation_runs_eager_on_current_weights",
    ),
    Mutation(
        "evaluation runs eager when training is compiled",
        "models/classifier.py",
        "        if self.compiled and not (self.training and self.static_batch in (None, images.shape[0])):",
        "        if self.compiled and self.training and self.static_batch not in (None, images.shape[0]):",
        "tests/test_gpu_path.py::test_compiled_training_is_one_static_graph_and_evaluation_runs_eager_on_current_weights",
    ),
    # issue 32: claims that no entry broke before
    Mutation(
        "near-duplicates are grouped by perceptual-hash distance",
        "data/check.py",
        "hamming(hashes[start : start + 512, None], hashes[None, :]) <= max_bits)",
        "hamming(hashes[start : start + 512, None], hashes[None, :]) < 0)",
        "tests/test_reliability.py::test_near_duplicates_share_a_split_whatever_the_seed",
    ),
    Mutation(
        "a near-duplicate group lands in one split (the split is drawn over groups)",
        "data/split.py",
        "    groups = groups or {p: i for i, (p, _) in enumerate(items)}",
        "    groups = {p: i for i, (p, _) in enumerate(items)}",
        "tests/test_data.py::test_duplicate_groups_stay_in_one_split",
    ),
    Mutation(
        "an official split's CSV class names are mapped to the folders' names",
        "data/official.py",
        "        mapping.setdefault(csv_class, Counter())[label] += 1",
        "        mapping.setdefault(csv_class, Counter())[csv_class] += 1",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "class weights are N / (K x n_c) over the classes present",
        "models/classifier.py",
        "    return [total / (present * n) if n else 0.0 for n in counts]",
        "    return [total / (len(counts) * n) if n else 0.0 for n in counts]",
        IM + "test_class_weights_and_sampling_weights_give_every_class_the_same_total",
    ),
    Mutation(
        "label-issues reads out-of-fold predictions only (a cv folder, not a run)",
        "commands/label_issues.py",
        "    if FOLDS_KEY not in config:",
        "    if False:",
        IM + "test_label_issues_needs_out_of_fold_predictions",
    ),
    Mutation(
        "int8 calibration images come from the training split only",
        "deploy/quantize.py",
        '        train = [r for r in rows if r["split"] == "train"]',
        "        train = rows",
        I8 + "test_int8_bundle_keeps_the_model_and_says_how_it_was_checked",
    ),
    Mutation(
        "ExecuTorch int8 is judged on the same test images as ONNX int8",
        "deploy/pte.py",
        "    figures = check(fp32.logits(images.test), int8.logits(images.test), images.targets)",
        "    figures = check(fp32.logits(images.test[:8]), int8.logits(images.test[:8]), images.targets[:8])",
        MO + "test_executorch_programs_agree_with_the_fp32_model_on_the_test_images",
    ),
    Mutation(
        "predict --runtime executorch runs the int8 program unless fp32 is asked for",
        "deploy/runtime.py",
        '        self.program = PteModel(bundle_dir / (PTE_INT8_NAME if self.precision == "int8" else PTE_NAME))',
        "        self.program = PteModel(bundle_dir / PTE_NAME)",
        MO + "test_predict_runs_the_executorch_program",
    ),
    Mutation(
        "the page refuses a decompression bomb, in words",
        "deploy/serve.py",
        "        except (Image.DecompressionBombError, Image.DecompressionBombWarning):",
        "        except (Image.DecompressionBombWarning,):",
        SE + "test_the_page_through_gradio_client",
    ),
    Mutation(
        "the page says an empty file is empty",
        "deploy/serve.py",
        "        if size == 0:",
        "        if size < 0:",
        SE + "test_the_page_through_gradio_client",
    ),
    Mutation(
        "answers batched together are each request's own (as one at a time)",
        "deploy/serve.py",
        "            for a, prediction, h in zip(good, predictions, heat, strict=True):",
        "            for a, prediction, h in zip(good, predictions[::-1], heat[::-1], strict=True):",
        SE + "test_requests_arriving_together_are_answered_in_one_batch",
    ),
    Mutation(
        "an unreadable training image is named, not dropped from the field of view silently",
        "data/field_of_view.py",
        '                skipped.append((row["path"], f"{type(err).__name__}: {err}"))\n',
        "",
        FV + "test_an_unreadable_training_image_is_named_not_dropped_from_the_view_silently",
    ),
    Mutation(
        "explain's heatmaps carry their titles",
        "deploy/explain.py",
        '        fig.suptitle(f"{path.name}: predicted {class_names[top]} (p = {float(probs[top]):.3f})")',
        "        pass",
        "tests/test_deploy.py::test_explain_writes_titled_heatmaps",
    ),
    Mutation(
        "a cached image is not decoded again",
        "data/datamodule.py",
        "        return cached if cached is not None else decode_resized(",
        "        return decode_resized(",
        "tests/test_data.py::test_cached_and_uncached_pipelines_feed_the_same_pixels",
    ),
    # issue 24: on-device formats and the page
    Mutation(
        "the Core ML graph blacks out what the model never saw",
        "deploy/coreml.py",
        "x = (image * self.visible / 255.0 - self.mean) / self.std",
        "x = (image / 255.0 - self.mean) / self.std",
        MO + "test_the_core_ml_graph_preprocesses_as_predict_mask_and_temperature_included",
    ),
    Mutation(
        "the Core ML graph applies the temperature",
        "deploy/coreml.py",
        "return torch.softmax(self.network(x) / self.temperature, dim=1)",
        "return torch.softmax(self.network(x), dim=1)",
        MO + "test_the_core_ml_graph_preprocesses_as_predict_mask_and_temperature_included",
    ),
    Mutation(
        "a missing 'mobile' extra is named in one line",
        "extras.py",
        '        raise MissingExtraError(\n            f"{package} is not installed',
        '        raise ImportError(\n            f"{package} is not installed',
        MO + "test_a_missing_mobile_extra_is_named",
        expect="ImportError",  # a traceback instead of the one-line message
    ),
    Mutation(
        "the ExecuTorch program is traced on a contiguous example (else it misreads NCHW input)",
        "deploy/pte.py",
        "(example[:2].contiguous(),)",
        "(example[:2],)",
        MO + "test_executorch_programs_agree_with_the_fp32_model_on_the_test_images",
        expect="kvasir_mobileone.deploy.export.ParityError",  # the export's own check refuses the program first
    ),
    Mutation(
        "a refused ExecuTorch int8 program is not written",
        "deploy/pte.py",
        "    export_pte_int8(fused, images.calibration, candidate)\n",
        "    export_pte_int8(fused, images.calibration, candidate)\n"
        "    (out_dir / PTE_INT8_NAME).write_bytes(candidate.read_bytes())  # written before it is judged\n",
        MO + "test_a_refused_executorch_int8_program_is_not_written",
    ),
    Mutation(
        "the page lays the heatmap over the frame as taken",
        "deploy/explain.py",
        ".resize((width, height), Image.BILINEAR)",
        ".resize(heat.shape[::-1], Image.BILINEAR)",
        SE + "test_the_page_in_a_browser",
    ),
    Mutation(
        "the page numbers repeated file names",
        "deploy/serve.py",
        'out.append(f"{name} ({seen[name]})" if total[name] > 1 and seen[name] > 1 else name)',
        "out.append(name)",
        SE + "test_requests_arriving_together_are_answered_in_one_batch",
    ),
    Mutation(
        "the page says in words why a file cannot be read",
        "deploy/serve.py",
        '"not an image that can be read: its contents are not JPEG, PNG or another image format"',
        'f"not an image that can be read ({type(err).__name__})"',
        SE + "test_the_page_through_gradio_client",
    ),
    Mutation(
        "the server deletes its uploads and heatmaps when it stops",
        "commands/serve.py",
        "    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))",
        "    pass",
        SE + "test_the_server_deletes_its_uploads_when_it_stops",
    ),
    # issue 22: a common field of view, found from the data
    Mutation(
        "the field of view comes from the training images alone",
        "data/field_of_view.py",
        '    train = [r for r in rows if r["split"] == "train"]',
        "    train = list(rows)",
        FV + "test_a_frame_planted_only_in_test_images_leaves_the_view_unchanged",
    ),
    Mutation(
        "frame is near-black joined to the border (a dark lumen is not)",
        "marks.py",
        "    return np.isin(labels, border[border > 0])",
        "    return dark",
        FV + "test_frame_and_overlay_pixels",
    ),
    Mutation(
        "a view too small is refused",
        "data/field_of_view.py",
        "    if view.fraction < min_view:",
        "    if view.fraction < 0:",
        FV + "test_common_view_quantile_and_refusal",
    ),
    Mutation(
        "the quantile lets (1 - q) of a class's frames differ",
        "data/field_of_view.py",
        "        allowed = np.floor((1 - quantile) * self.counts + 1e-9).astype(np.int32)[:, None, None]",
        "        allowed = np.zeros_like(self.counts)[:, None, None]",
        FV + "test_common_view_quantile_and_refusal",
    ),
    Mutation(
        "an overlay is fixed only when it stays put (binomial test)",
        "data/field_of_view.py",
        "        fixed |= (count > 0) & (binom.sf(count - 1, n, rate) < alpha / pixels)",
        "        fixed |= count > 0",
        FV + "test_overlays_that_stay_put_are_out_of_the_view_and_scattered_highlights_are_not",
    ),
    Mutation(
        "the workers' loader applies the view",
        "data/datamodule.py",
        "            skip_unreadable=training,\n            prepare=self.model_input.prepare,",
        "            skip_unreadable=training,\n            prepare=None,",
        FV + "test_both_loaders_black_out_everything_outside_the_view",
    ),
    Mutation(
        "the resident loader applies the view",
        "data/datamodule.py",
        "self.device, self.model_input.hidden())",
        "self.device, None)",
        FV + "test_both_loaders_black_out_everything_outside_the_view",
    ),
    Mutation(
        "predict (bundle and run) applies the view",
        "images.py",
        "        if self.field_of_view:\n            hidden |=",
        "        if False:\n            hidden |=",
        FV + "test_the_mask_travels_with_the_run_checkpoint_bundle_and_predict",
    ),
    Mutation(
        "the frame swap pastes the donor's frame",
        "data/frame.py",
        "    swapped[given] = donor[given]",
        "    swapped[given] = tissue[given]",
        FV + "test_swap_frame_takes_the_donors_outline_and_keeps_the_tissue",
    ),
    Mutation(
        "the audit's baseline reads the images as the model sees them",
        "evaluation/shortcut_audit.py",
        "        image = model_input.prepare(raw)",
        "        image = raw",
        FV + "test_the_baseline_reads_what_the_model_sees",
    ),
    Mutation(
        "the model card's snippet applies the view",
        "deploy/onnxruntime_example.py",
        '    visible &= np.asarray(Image.open("field_of_view.png").convert("L")) >= 128',
        "    pass",
        "tests/test_deploy.py::test_the_model_cards_snippet_preprocesses_exactly_as_predict_mask_included",
    ),
    # issue 21: imbalanced classes and doubtful labels
    Mutation(
        "val/f1_macro averages the classes present, as the report does",
        "models/metrics.py",
        "        return macro_f1_from_counts(tp.double(), (fp + fn).double(), (tp + fn) > 0).float()",
        "        return macro_f1_from_counts(tp.double(), (fp + fn).double(), (tp + fn + fp) > 0).float()",
        IM + "test_val_macro_f1_is_the_reports_macro_f1",
    ),
    Mutation(
        "balanced accuracy is the mean recall over the classes present",
        "evaluation/metrics.py",
        "        recalls.append(hits / np.maximum(np.sum(is_true, axis=axis), 1))",
        "        recalls.append(hits / max(len(targets), 1))",
        IM + "test_val_macro_f1_is_the_reports_macro_f1",
    ),
    Mutation(
        "best.ckpt is chosen by --trainer.monitor",
        "commands/fit.py",
        "            monitor=trainer.monitor,",
        '            monitor="val/acc",',
        IM + "test_best_ckpt_is_the_epoch_the_monitor_picks",
    ),
    Mutation(
        "a lower val/loss is better",
        "models/trainer.py",
        '"val/loss": "min"}',
        '"val/loss": "max"}',
        IM + "test_best_ckpt_is_the_epoch_the_monitor_picks",
    ),
    Mutation(
        "class weights weigh the training loss",
        "models/classifier.py",
        "            weight=self.loss_weights if training else None,",
        "            weight=None,",
        IM + "test_the_training_loss_is_class_weighted_and_the_val_loss_is_not",
    ),
    Mutation(
        "balanced sampling in the workers loader",
        "data/datamodule.py",
        '        if shuffle and self.data.sampler == "balanced":',
        "        if False:",
        IM + "test_balanced_sampling_draws_every_class_alike_in_both_loaders",
    ),
    Mutation(
        "balanced sampling in the GPU-resident loader",
        "data/datamodule.py",
        "for k in members]) if balanced else None,",
        "for k in members]) if False else None,",
        IM + "test_balanced_sampling_draws_every_class_alike_in_both_loaders",
    ),
    Mutation(
        "a class too small for scikit-learn's stratification is split class by class",
        "data/split.py",
        "        train_k, val_k, test_k = split_per_class(keys, labels, val_fraction, test_fraction, seed)",
        "        raise",
        "tests/test_data.py::test_a_class_too_small_to_stratify_trains_only_and_the_rest_is_split_as_asked",
        expect="ValueError",  # scikit-learn's refusal to stratify is the failure the class-by-class split prevents
    ),
    Mutation(
        "label-issues lists cleanlab's flagged images, not the lowest scores",
        "evaluation/label_issues.py",
        "        for i in flagged\n",
        "        for i in np.argsort(quality)[: 3 * len(flagged)]\n",
        IM + "test_label_issues_find_planted_flips_and_fit_leaves_them_out",
    ),
    Mutation(
        "--data.exclude leaves the images out of a new split",
        "data/check.py",
        "    report.items = [(rel, label) for rel, label in report.items if rel not in exclude]",
        "    report.items = list(report.items)",
        IM + "test_label_issues_find_planted_flips_and_fit_leaves_them_out",
    ),
    # issue 23: tests that can fail, decisions made with statistics, options honoured
    Mutation(
        "int8 is refused when the whole interval lies below -max_accuracy_drop",
        "deploy/quantize.py",
        "    if high < -max_accuracy_drop:",
        "    if high < -max_accuracy_drop - 1:",
        I8 + "test_the_int8_verdict_rests_on_the_interval_and_mcnemar",
    ),
    Mutation(
        "int8 is refused when McNemar finds more fp32-only-right images",
        "deploy/quantize.py",
        'figures["fp32_only_right"] > figures["int8_only_right"]',
        'figures["fp32_only_right"] < figures["int8_only_right"]',
        I8 + "test_the_int8_verdict_rests_on_the_interval_and_mcnemar",
    ),
    Mutation(
        "int8 is certified only when the lower bound is above -max_accuracy_drop",
        "deploy/quantize.py",
        "    if low > -max_accuracy_drop:",
        "    if high > -max_accuracy_drop:",
        I8 + "test_the_int8_verdict_rests_on_the_interval_and_mcnemar",
    ),
    Mutation(
        "--force writes a refused int8 model",
        "deploy/quantize.py",
        'figures["verdict"] != "refused" or force',
        'figures["verdict"] != "refused"',
        I8 + "test_the_int8_verdict_rests_on_the_interval_and_mcnemar",
    ),
    Mutation(
        "a refused int8 model leaves no file behind",
        "deploy/quantize.py",
        "        candidate.unlink(missing_ok=True)\n        raise",
        "        raise",
        I8 + "test_a_refused_int8_model_is_not_written_and_the_fp32_bundle_stands",
    ),
    Mutation(
        "the shortcut baseline is judged by its interval, not its point value",
        "evaluation/audit_report.py",
        'above, reaches = low > baseline["chance"], high >= network_accuracy',
        'above, reaches = baseline["accuracy"] > baseline["chance"], high >= network_accuracy',
        AU + "test_the_shortcut_baseline_is_judged_by_its_interval",
    ),
    Mutation(
        "training applies the mask (not only evaluation)",
        "data/datamodule.py",
        "            prepare=self.model_input.prepare,\n            frame_swap=",
        '            prepare=self.model_input.prepare if split != "train" else None,\n            frame_swap=',
        AU + "test_the_masked_model_learned_the_tissue_where_the_planted_model_learned_the_box",
    ),
    Mutation(
        "the model card carries the audit's verdict",
        "deploy/card.py",
        'LIMITATIONS + audit_paragraph(metadata.get("audit") or {"status": "not audited"})',
        "LIMITATIONS",
        AU + "test_a_planted_shortcut_is_flagged",
    ),
    Mutation(
        "an audit of another checkpoint is not quoted on the card",
        "runs.py",
        'if found.get("checkpoint_sha256") != checkpoint_sha256:',
        "if False:",
        AU + "test_masking_the_region_in_training_removes_the_dependence",
    ),
    Mutation(
        "predict applies the fitted temperature",
        "deploy/predict.py",
        "    return apply_temperature(probs, predictor.temperature) if predictor.temperature else probs",
        "    return probs",
        "tests/test_results.py::test_tta_and_temperature_are_reported_and_exported",
    ),
    Mutation(
        "a file over --max_file_mb is refused, alone, on the page",
        "deploy/serve.py",
        "        if size > max_bytes:",
        "        if False:",
        "tests/test_serve.py::test_the_page_through_gradio_client",
    ),
    Mutation(
        "Gradio's own cap does not discard a whole upload for one large file",
        "commands/serve.py",
        "                upload_cap_mb(max_file_mb, max_video_mb) * 1e6",
        "                max_file_mb * 1e6",
        "tests/test_serve.py::test_the_page_through_gradio_client",
        expect="ValueError",  # Gradio refuses the whole upload ("exceeds the maximum file size"): the breakage itself
    ),
    Mutation(
        "intervals are 95% intervals",
        "evaluation/stats.py",
        "LEVEL = 0.95",
        "LEVEL = 0.90",
        "tests/test_results.py::test_intervals_cover_the_truth_95_percent_of_the_time_and_are_as_narrow_as_theory",
    ),
    Mutation(
        "the difference of two models is bootstrapped paired",
        "evaluation/stats.py",
        "            paired=True,\n            vectorized=True,\n            n_resamples=n_resamples,\n"
        '            confidence_level=level,\n            method="BCa",',
        "            paired=False,\n            vectorized=True,\n            n_resamples=n_resamples,\n"
        '            confidence_level=level,\n            method="percentile",',  # BCa's jackknife needs paired
        "tests/test_results.py::test_the_paired_difference_interval_covers_the_true_difference_and_is_paired",
    ),
    Mutation(
        "predict on a run honours --trainer.eval_precision",
        "models/loading.py",
        "    with torch.no_grad(), precision_context(precision, device_type):",
        "    with torch.no_grad():",
        CLI + "test_test_reproduces_the_fit_report_exactly_whatever_the_training_precision",
    ),
    Mutation(
        "features honour --trainer.eval_precision",
        "evaluation/features.py",
        "    with trained.evaluating():",
        '    with __import__("kvasir_mobileone.models.loading").models.loading._evaluating("32-true", "cpu"):',  # fp32
        CLI + "test_test_reproduces_the_fit_report_exactly_whatever_the_training_precision",
    ),
    Mutation(
        "fast_dev_run is a smoke run, not a crash",
        "commands/fit.py",
        "    if trainer.fast_dev_run:",
        "    if False:",
        CLI + "test_fast_dev_run_is_a_smoke_run_without_a_test_report",
        # the claim is "says so instead of crashing": broken, fit crashes at the checkpoint fast_dev_run never saved
        expect="kvasir_mobileone.runs.RunError",
    ),
    Mutation(
        "demo --images_per_class is honoured when a data folder exists",
        "commands/demo.py",
        'data_dir = out_dir / f"data-{images_per_class}-per-class-seed{seed}"',
        'data_dir = out_dir / "data"',
        CLI + "test_demo_makes_the_data_it_is_asked_for_when_a_data_folder_exists",
    ),
    Mutation(
        "region boxes parse on the command line as the README writes them",
        "cli.py",
        "    args = quote_regions(renamed_flags(args))",
        "    args = renamed_flags(args)",
        CLI + "test_every_command_line_in_the_readme_parses",
    ),
    Mutation(
        "the tool's warnings print as `warning: ...`",
        "cli.py",
        '        return f"warning: {message}\\n"',
        "        return _python_format_warning(message, category, filename, lineno, line)",
        CLI + "test_the_tools_own_warnings_read_warning_colon",
    ),
    # issue 20: HyperKvasir, official splits, leaks
    Mutation(
        "a folder with images and class folders is an error",
        "data/folder.py",
        "        if holder is not None:",
        "        if False:",
        HK + "test_a_folder_with_images_and_class_folders_or_two_classes_of_one_name_is_an_error",
    ),
    Mutation(
        "the class is the leaf folder, not the first level",
        "data/folder.py",
        "        classes[here.name] = here",
        "        classes[here.relative_to(root).parts[0]] = here",
        HK + "test_the_nested_layout_is_read_as_its_leaf_classes",
    ),
    Mutation(
        "the official split's fold K is the test split",
        "data/official.py",
        "        if item_fold == fold:",
        "        if item_fold != fold:",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "labels come from the folders, not the CSV",
        "data/official.py",
        "        matched.append((rel, label))",
        "        matched.append((rel, csv_class))",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "files the split does not list are named",
        "data/official.py",
        "            report.files_without_row.append(rel)",
        "            pass",
        HK + "test_an_official_split_maps_names_and_reports_rows_without_files_and_files_without_rows",
    ),
    Mutation(
        "the leak-free test set leaves out near-copies of train/val images",
        "data/split.py",
        'if r["split"] == "test" and r.get(GROUP, "") not in seen_in_training}',
        'if r["split"] == "test"}',
        HK + "test_the_leak_free_subset_is_the_test_images_without_a_planted_near_duplicate",
    ),
    Mutation(
        "the test report's leak-free figures cover the leak-free images only",
        "evaluation/testing.py",
        "    keep = np.array([p in clean for p in paths], dtype=bool)",
        "    keep = np.array([p in clean or True for p in paths], dtype=bool)",
        HK + "test_fit_with_the_shipped_official_split_runs_end_to_end_and_reports_both_test_figures",
    ),
    Mutation(
        "--data.on_leak refuse stops a leaking split",
        "commands/fit.py",
        '    if on_leak == "refuse":',
        '    if on_leak == "never":',
        HK + "test_fit_with_the_shipped_official_split_runs_end_to_end_and_reports_both_test_figures",
    ),
    Mutation(
        "a manifest's unreadable val/test image stops fit before training",
        "data/check.py",
        "        if held_out:",
        "        if False:",
        HK + "test_a_manifest_is_checked_like_a_folder",
    ),
    Mutation(
        "cv runs the official folds",
        "data/folds.py",
        "    if not data.official_split:\n        return fold_manifests(",
        "    if True:\n        return fold_manifests(",
        HK + "test_cv_runs_the_official_folds",
    ),
    Mutation(
        "the model card states the dataset's licence",
        "deploy/card.py",
        '    if dataset.licence == "other":',
        '    if dataset.licence != "other":',
        HK + "test_the_model_card_states_the_dataset_and_its_licence",
    ),
    Mutation(
        "HyperKvasir extracts to its own folder",
        "commands/download.py",
        "    extract(zip_path, dest_dir, spec.folder)",
        "    extract(zip_path, dest_dir)",
        "tests/test_download.py::test_hyper_kvasir_downloads_into_its_nested_layout_and_says_what_to_do_offline",
        expect="FileNotFoundError",  # extracted under Kvasir's folder name, there is no labeled-images/ to move in
    ),
    Mutation(
        "the check decodes and hashes each unchanged file once",
        "data/check.py",
        'known.get(rel, {}).get("stamp") != stamps[rel]]',
        "True]",
        "tests/test_reliability.py::test_the_check_reads_unchanged_files_once_and_changed_files_again",
    ),
    Mutation(
        "predict breaks a tie as argmax (evaluation) does",
        "deploy/predict.py",
        'np.argsort(-probs, kind="stable")',
        "np.argsort(-probs)",
        "tests/test_int8.py::test_predict_runs_the_int8_model_without_torch_unless_fp32_is_asked",
    ),
    Mutation(
        "each cv fold records its own official fold",
        "commands/cv.py",
        "manifest=str(manifest), fold=k)",
        "manifest=str(manifest))",
        HK + "test_cv_runs_the_official_folds",
    ),
    Mutation(
        "fewer than 2 leak-free test images give no figures instead of a crash",
        "evaluation/testing.py",
        "    if keep.sum() < 2:",
        "    if keep.sum() < 1:",
        HK + "test_a_single_leak_free_test_image_is_reported_without_figures",
        expect="ValueError",  # the crash the guard prevents: scipy's bootstrap of a single image
    ),
    Mutation(
        "the check's cache goes to --data.cache_dir when given",
        "data/check.py",
        "(Path(cache_dir) if cache_dir else root / CACHE_DIR_NAME)",
        "(root / CACHE_DIR_NAME)",
        "tests/test_reliability.py::test_the_check_keeps_its_cache_in_the_cache_dir_when_one_is_given",
    ),
    # issue 19: one owner per contract, thin commands
    Mutation(
        "nothing below commands/ prints",
        "deploy/explain.py",
        "    return written",
        "    print(len(written))\n    return written",
        "tests/test_structure.py::test_every_user_command_is_a_function_in_commands_and_nothing_below_prints",
    ),
    Mutation(
        "run-folder file names are spelled in runs.py alone",
        "commands/demo.py",
        "{run.test.report}",
        "{run.test_dir / 'report.md'}",
        "tests/test_structure.py::test_run_files_are_spelled_in_runs_py_alone",
    ),
    Mutation(
        "the README's run-folder table is runs.LAYOUT",
        "runs.py",
        '"`checkpoints/last.ckpt`": "end of the last epoch, for `--resume`",',
        '"`checkpoints/last.ckpt`": "end of the last epoch",',
        "tests/test_structure.py::test_the_readme_run_folder_table_is_runs_layout",
    ),
    Mutation(
        "the formatter decides (no fmt: skip)",
        "io.py",
        'IMAGE_EXTENSIONS = (".jpg",',
        'IMAGE_EXTENSIONS = (".jpg",  # fmt' + ": skip\n",
        "tests/test_structure.py::test_the_formatter_decides_the_layout",
    ),
    Mutation(
        "the model card's snippet masks as predict does",
        "deploy/onnxruntime_example.py",
        'for x0, y0, x1, y1 in spec["mask"]:',
        "for x0, y0, x1, y1 in []:",
        "tests/test_deploy.py::test_the_model_cards_snippet_preprocesses_exactly_as_predict_mask_included",
    ),
    Mutation(
        "the checkpoint's stored input is read back, not recomputed",
        "models/classifier.py",
        'ModelInput.from_dict(hparams["normalization"])',
        'model_input_for(offline["name"], hparams.get("image_size"))',
        "tests/test_model.py::test_a_checkpoint_gives_back_the_input_it_was_trained_with",
    ),
    Mutation(
        "an old flag name still works, with a note (--data for check, eda, prepare, benchmark)",
        "cli.py",
        "        if flag in renamed:",
        "        if False:",
        "tests/test_cli.py::test_the_data_folder_is_data_dir_everywhere_and_the_old_flag_still_works_with_a_note",
    ),
]


# How a failure reads when the test caught the broken behaviour: an assertion (plain, or pytest.raises / pytest.fail
# saying the expected error or message did not come), or the error the entry names in `expect`.
CAUGHT = ("AssertionError", "Failed:", "assert ")  # pytest shows a failed bare `assert` as "assert ..."


def failure_line(output: str) -> tuple[str, str]:
    """('FAILED' or 'ERROR', the reason) from pytest's short summary (-rfE), or ('', '') when it has none. Only the
    summary is read: captured logs above it have lines that start with ERROR too."""
    summary = output.split("short test summary info", 1)[-1] if "short test summary info" in output else ""
    for line in summary.splitlines():
        for kind in ("FAILED", "ERROR"):
            if line.startswith(f"{kind} ") and " - " in line:
                return kind, line.split(" - ", 1)[1].strip()
            if line.startswith(f"{kind} "):
                return kind, ""
    return "", ""


SNAPSHOT_TEST = """
import json, os, sys
import pytest
from conftest import SHARED_FIXTURES

@pytest.mark.timeout(0)  # every shared fixture in one test: longer than one test's limit
def test_snapshot(request):
    paths, modules = {}, {}
    for name in SHARED_FIXTURES:  # in order: each after those it is made from
        paths[name] = str(request.getfixturevalue(name))
        modules[name] = sorted(m for m in sys.modules if m == "kvasir_mobileone" or m.startswith("kvasir_mobileone."))
    with open(os.environ["KVASIR_SNAPSHOT_OUT"], "w") as f:
        json.dump({"paths": paths, "modules": modules}, f)
"""


def copy_tree(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for part in ("src", "tests", "tools", "configs", "docs", "pyproject.toml", "README.md"):  # tests read these
        source = ROOT / part
        if source.exists():
            (shutil.copytree if source.is_dir() else shutil.copy)(source, work / part)


def shared_fixtures() -> tuple[str, ...]:
    """conftest.SHARED_FIXTURES, read from the file (importing conftest would set the test environment here)."""
    tree = ast.parse((ROOT / "tests" / "conftest.py").read_text())
    value = next(
        n.value for n in tree.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == "SHARED_FIXTURES"
    )
    return ast.literal_eval(value)


def tests_using_trained_fixtures(tests: list[str]) -> set[str]:
    """The tests (pytest node ids, as the entries name them) that ask, directly or through other fixtures, for a
    trained run or bundle of conftest.SHARED_FIXTURES (tiny_data alone takes a second to make): one collection."""
    trained = set(shared_fixtures()) - {"tiny_data"}
    command = [sys.executable, "-m", "pytest", "--fixtures-per-test", "-q", "-m", "", "-p", "no:cacheprovider"]
    listing = subprocess.run([*command, *sorted(set(tests))], cwd=ROOT, capture_output=True, text=True).stdout
    using, name, lines = set(), None, listing.splitlines()
    for k, line in enumerate(lines):
        if "fixtures used by " in line:  # "---- fixtures used by NAME ----" then "---- (tests/FILE.py:LINE) ----"
            function = line.split("fixtures used by ", 1)[1].strip(" -").split("[")[0]
            where = lines[k + 1].strip(" -()").split(":")[0] if k + 1 < len(lines) else ""
            name = f"{where}::{function}"
        elif name and " -- " in line and line.split(" -- ")[0].strip() in trained:
            using.add(name)
    return using


class Snapshot:
    """The shared session fixtures (conftest.SHARED_FIXTURES: the trained runs and bundles), built once from the
    unbroken code and restored before each entry whose mutated module that build never loaded: such a mutation
    cannot change them, and rebuilding them (minutes each) would only repeat the same work. Every other entry
    builds its own."""

    def __init__(self, tmp: Path, tests: list[str]):
        self.tmp, self.root, self.pristine = tmp, tmp / "fixtures", tmp / "fixtures.pristine"
        self.json = tmp / "snapshot.json"
        self.modules: dict[str, set[str]] | None = None  # per fixture, the modules loaded once it was built
        self.paths: dict[str, str] = {}
        self.using = tests_using_trained_fixtures([t.split("[")[0] for t in tests])

    def build(self) -> None:
        clean = self.tmp / "clean"
        copy_tree(clean)
        (clean / "tests" / "test_breakit_snapshot.py").write_text(SNAPSHOT_TEST)
        env = os.environ | {"PYTHONPATH": str(clean / "src"), "KVASIR_SNAPSHOT_OUT": str(self.json)} | QUIET
        start = time.perf_counter()
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--basetemp", str(self.root)]
        result = subprocess.run(
            [*command, "tests/test_breakit_snapshot.py"], cwd=clean, env=env, capture_output=True, text=True
        )
        if result.returncode != 0:
            raise SystemExit(f"Building the shared fixtures failed on the unbroken code:\n{result.stdout[-3000:]}")
        shutil.copytree(self.root, self.pristine, symlinks=True)
        built = json.loads(self.json.read_text())
        self.paths = built["paths"]
        self.modules = {name: set(loaded) for name, loaded in built["modules"].items()}
        print(f"shared fixtures built once, in {time.perf_counter() - start:.0f} s", file=sys.stderr)

    def reusable(self, mutation: Mutation) -> list[str]:
        """The shared fixtures that hold for this mutation: those whose build (and the builds before it, which it
        may use) never loaded the mutated module; none when the entry's test needs no trained run or bundle. The
        first entry that needs them builds them."""
        if mutation.test.split("[")[0] not in self.using:
            return []
        if self.modules is None:
            self.build()
        module = ("kvasir_mobileone." + mutation.file.removesuffix(".py").replace("/", ".")).removesuffix(".__init__")
        module = READ_AS_TEXT.get(module, module)  # a file read, not imported, counts as its reader
        return [name for name, loaded in self.modules.items() if module not in loaded]

    def restore(self, names: list[str], work: Path) -> dict:
        """The fixtures as built (a test may have written into them), and the environment that hands over `names`."""
        shutil.rmtree(self.root, ignore_errors=True)
        shutil.copytree(self.pristine, self.root, symlinks=True)
        handed = work / "snapshot.json"
        handed.write_text(json.dumps({name: self.paths[name] for name in names}))
        return {"KVASIR_TEST_SNAPSHOT": str(handed)}


def run(mutation: Mutation, work: Path, snapshot: Snapshot | None = None) -> tuple[str, str, float]:
    """(verdict, the failure's reason, seconds). 'caught': the named test failed with an assertion (or the error in
    `expect`); 'crashed': it failed with another error, or in a fixture's set-up or teardown, so the claim itself was
    not what caught it; 'MISSED': it passed; 'STALE': the original text is not in the file exactly once (or,
    indented, not at a line's start), or the test is gone."""
    copy_tree(work)
    target = work / "src" / "kvasir_mobileone" / mutation.file
    text = target.read_text()
    if text.count(mutation.original) != 1:
        return "STALE", "the original text is not in the file exactly once", 0.0
    at = text.index(mutation.original)
    if mutation.original[:1] == " " and at and text[at - 1] != "\n":  # indented text must be a line's whole start
        return "STALE", "the original text starts inside a more deeply indented line (its indentation changed)", 0.0
    target.write_text(text.replace(mutation.original, mutation.broken))
    env = os.environ | {"PYTHONPATH": str(work / "src"), "COLUMNS": "400"} | QUIET  # a summary line wide enough
    reused = snapshot.reusable(mutation) if snapshot else []
    env |= snapshot.restore(reused, work) if reused else {}
    start = time.perf_counter()
    # -m "": slow-marked tests run too; -rfE: the short summary names the failure and its reason; a longer limit
    # than the suite's, since an entry may build the shared runs and bundles in one test's set-up
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-rfE",
        "-m",
        "",
        "-p",
        "no:cacheprovider",
        "--timeout",
        "1800",
    ]
    command.append(mutation.test)
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode == 5 or "no tests ran" in result.stdout:
        return "STALE", "the test is gone or renamed", seconds
    if result.returncode == 0:
        return "MISSED", "", seconds
    kind, reason = failure_line(result.stdout)
    expected = (mutation.expect,) if mutation.expect else CAUGHT
    timed_out = reason.startswith("Failed: Timeout")  # pytest-timeout: a hang, not the claim
    # an entry that names its error may be caught in a fixture: the export's own check refusing what it builds
    caught = (kind == "FAILED" or mutation.expect is not None) and reason.startswith(expected) and not timed_out
    return (
        ("caught" if caught else "crashed"),
        (f"{kind.lower()} in set-up or teardown: " if kind == "ERROR" else "") + (reason or "no reason printed"),
        seconds,
    )


def entry_numbers(text: str) -> range:
    """'7' or '7-12' (1-based, both ends included)."""
    first, _, last = text.partition("-")
    return range(int(first), int(last or first) + 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", help="run the entries whose behaviour or test contains one of these")
    parser.add_argument("--first", type=int, help="run the first N entries (the newest issues' come first)")
    parser.add_argument("--entries", nargs="+", help="run these entries by number, in this order: 3 7-12")
    parser.add_argument(
        "--rebuild", action="store_true", help="build the shared fixtures afresh for every entry (no snapshot)"
    )
    args = parser.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(o in m.behaviour or o in m.test for o in args.only)]
    chosen = chosen[: args.first] if args.first else chosen
    if args.entries:  # in the order given
        numbers = dict.fromkeys(n for e in args.entries for n in entry_numbers(e))
        chosen = [chosen[n - 1] for n in numbers]
    rows = []
    with tempfile.TemporaryDirectory(prefix="breakit-") as tmp:
        snapshot = None if args.rebuild else Snapshot(Path(tmp), [m.test for m in chosen])
        for k, mutation in enumerate(chosen, 1):
            verdict, reason, seconds = run(mutation, Path(tmp) / "copy", snapshot)
            print(f"[{k}/{len(chosen)}] {verdict}: {mutation.behaviour} ({seconds:.0f} s) {reason}", file=sys.stderr)
            rows.append((mutation, verdict, reason))
    print("| behaviour | what was broken (src/kvasir_mobileone/) | test that must fail | result | how it failed |")
    print("|---|---|---|---|---|")
    for m, verdict, reason in rows:
        broken = (m.broken.strip().splitlines() or ["(removed)"])[0]
        change = f"`{m.file}`: `{m.original.strip().splitlines()[0]}` → `{broken}`"
        why = reason.replace("|", "\\|")[:140]
        print(f"| {m.behaviour} | {change} | `{m.test.split('::')[-1]}` | {verdict} | {why} |")
    bad = [m for m, verdict, _ in rows if verdict != "caught"]
    print(f"\n{len(rows) - len(bad)} of {len(rows)} mutations caught.")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

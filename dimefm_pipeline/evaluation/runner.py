"""`evaluate`: every metric of a suite for one model, as a JSON-ready dict.

Features of each image set are extracted once and shared by all tasks that use the same images;
zero-shot classifiers are built once per task and reused on every shifted copy of its test set.
"""

from __future__ import annotations

import time

import numpy as np

from dimefm_pipeline.evaluation.features import encode_images, encode_texts, progress_bar
from dimefm_pipeline.evaluation.linear_probe import ProbeConfig, linear_probe
from dimefm_pipeline.evaluation.retrieval import recall_at_k
from dimefm_pipeline.evaluation.suite import ImageSet, Suite
from dimefm_pipeline.evaluation.intervals import pack
from dimefm_pipeline.evaluation.zeroshot import classifier_weights, predict, zero_shot_metrics


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(vals)) if vals else None


def _correct(features, labels, weights):
    import torch

    return (predict(features, weights) == torch.as_tensor(labels)).numpy()


def _task_row(model, task, feats, *, probe: bool, probe_config: ProbeConfig, keep_correct: bool) -> dict:
    """Every metric of one task; `feats(images)` gives (cached) features of an image set."""
    weights = classifier_weights(model, task.classnames, task.templates)
    zs = zero_shot_metrics(feats(task.test.images), task.test.labels, weights)
    row: dict = {"n_classes": len(task.classnames), "chance": 1.0 / len(task.classnames),
                 "n_test": len(task.test.labels), "test_set": task.test.images.key,
                 "zero_shot": zs["acc1"], "zero_shot_acc5": zs["acc5"],
                 "zero_shot_mean_per_class_recall": zs["mean_per_class_recall"]}
    if keep_correct:
        row["zero_shot_correct"] = pack(_correct(feats(task.test.images), task.test.labels, weights))
    if probe and len(task.train.labels) and len(task.val.labels):  # a test-only dataset has no probe
        res = linear_probe(feats(task.train.images), task.train.labels, feats(task.val.images),
                           task.val.labels, feats(task.test.images), task.test.labels,
                           len(task.classnames), probe_config)
        row["linear_probe"] = res.accuracy
        row["linear_probe_weight_decay"] = res.weight_decay
        if keep_correct:
            row["linear_probe_correct"] = pack(res.correct)
    if task.shifts:
        correct = {name: _correct(feats(s.images), s.labels, weights) for name, s in task.shifts.items()}
        row["robustness"] = {name: int(c.sum()) / len(c) if len(c) else float("nan") for name, c in correct.items()}
        if keep_correct:
            row["robustness_correct"] = {name: pack(c) for name, c in correct.items()}
    return row


def evaluate(model, suite: Suite, *, probe: bool = True, probe_config: ProbeConfig = ProbeConfig(), batch_size: int = 256,
             progress: bool = True, keep_correct: bool = False) -> dict:
    """Zero-shot, linear probe, robustness and retrieval of `model` (a LoadedModel or anything with
    `model`, `preprocess`, `tokenizer`, `embed_dim`) on `suite` (`world.suite.resolve_suite` turns a
    name into one); accuracies are fractions. With `keep_correct`, every task also records which test
    images zero-shot and the probe got right (`zero_shot_correct`, `linear_probe_correct`, and per shift
    `robustness_correct`, packed by `evaluation.intervals.pack`) for bootstrap intervals."""
    start = time.time()
    cache: dict[str, object] = {}
    tasks: dict[str, dict] = {}
    with progress_bar(progress) as bar:

        def feats(images: ImageSet):
            if images.key not in cache:
                cache[images.key] = encode_images(model, images.load(), batch_size=batch_size, progress=bar,
                                                  desc=images.key)
            return cache[images.key]

        for task in suite.tasks:
            tasks[task.name] = _task_row(model, task, feats, probe=probe, probe_config=probe_config,
                                         keep_correct=keep_correct)

        retrieval = {}
        if suite.retrieval is not None:
            r = suite.retrieval
            retrieval = recall_at_k(feats(r.images), encode_texts(model, list(r.captions)), r.caption_image)

    shift_names = sorted({s for row in tasks.values() for s in row.get("robustness", {})})
    robustness = {s: _mean(row["robustness"][s] for row in tasks.values() if s in row.get("robustness", {}))
                  for s in shift_names}
    spec = getattr(model, "spec", None)  # in-memory models (training, demos) have no spec
    return {
        "suite": suite.name,
        "model": {"arch": spec.arch, "pretrained": spec.pretrained,
                  "fingerprint": getattr(model, "fingerprint", None)} if spec is not None else None,
        "zero_shot_mean": _mean(row["zero_shot"] for row in tasks.values()),
        "linear_probe_mean": _mean(row.get("linear_probe") for row in tasks.values()),
        "robustness_mean": _mean(robustness.values()),
        "robustness": robustness,
        "retrieval": retrieval,
        "tasks": tasks,
        "seconds": round(time.time() - start, 1),
    }

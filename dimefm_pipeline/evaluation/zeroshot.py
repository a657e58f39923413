"""Zero-shot classification: class embeddings from prompt ensembles, as CLIP does."""

from __future__ import annotations

from dimefm_pipeline.evaluation.features import encode_texts


def classifier_weights(loaded, classnames: tuple[str, ...] | list[str], templates: tuple[str, ...] | list[str]):
    """One unit vector per class: the renormalised mean of the class's normalised prompt embeddings."""
    import torch

    prompts = [t.format(c=c) for c in classnames for t in templates]
    feats = encode_texts(loaded, prompts).reshape(len(classnames), len(templates), -1)
    return torch.nn.functional.normalize(feats.mean(dim=1), dim=-1)


def predict(image_features, weights):
    """Class index per image: the class embedding with the highest cosine similarity."""
    return (image_features @ weights.T).argmax(dim=1)


def accuracy(image_features, labels, weights) -> float:
    """Top-1 zero-shot accuracy as a fraction (correct / total)."""
    import torch

    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        return float("nan")
    return int((predict(image_features, weights) == labels).sum()) / len(labels)


def zero_shot_metrics(image_features, labels, weights) -> dict:
    """`acc1`, `acc5` and `mean_per_class_recall`, defined as CLIP_benchmark defines them: top-5 only
    with five classes or more (None otherwise); the recall of each class that occurs in `labels`,
    averaged over those classes (balanced accuracy)."""
    import numpy as np
    import torch

    labels = torch.as_tensor(labels)
    n, n_classes = len(labels), weights.shape[0]
    if n == 0:
        return {"acc1": float("nan"), "acc5": None, "mean_per_class_recall": float("nan")}
    scores = image_features @ weights.T
    pred = scores.argmax(dim=1)
    acc5 = None
    if n_classes >= 5:
        top5 = scores.topk(5, dim=1).indices
        acc5 = int((top5 == labels[:, None]).any(dim=1).sum()) / n
    recalls = [int((pred[labels == c] == c).sum()) / int((labels == c).sum()) for c in labels.unique().tolist()]
    return {"acc1": int((pred == labels).sum()) / n, "acc5": acc5,
            "mean_per_class_recall": float(np.mean(np.array(recalls, dtype=np.float64)))}

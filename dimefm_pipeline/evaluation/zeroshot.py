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
    """Top-1 zero-shot accuracy as a fraction."""
    import torch

    labels = torch.as_tensor(labels)
    if len(labels) == 0:
        return float("nan")
    return float((predict(image_features, weights) == labels).float().mean())

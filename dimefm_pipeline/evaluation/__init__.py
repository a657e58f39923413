"""Evaluation in the spirit of ELEVATER: zero-shot with prompt ensembles, linear probes, robustness
under distribution shift, and image-text retrieval, on a suite of tasks (a user's folder dataset, or
the built-in world's suite, `world.suite`). Models come from `core.models.load`."""

from dimefm_pipeline.evaluation.runner import evaluate

__all__ = ["evaluate"]

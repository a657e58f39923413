"""Evaluation in the spirit of ELEVATER: zero-shot with prompt ensembles, linear probes, robustness
under distribution shift, and image-text retrieval, on the world suite or a user's folder dataset."""

from dimefm_pipeline.evaluation.runner import evaluate, load_eval_model, resolve_suite

__all__ = ["evaluate", "load_eval_model", "resolve_suite"]

"""`dimefm encode` commands."""

from dimefm_pipeline.cli import app  # noqa: F401

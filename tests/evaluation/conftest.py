"""Fixtures of the evaluation tests: the shipped world teacher, loaded once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def world_teacher():
    from dimefm_pipeline.core import models

    return models.load("world")

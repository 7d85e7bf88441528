"""The jobs a study plans, captured without running them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class StopStudy(Exception):
    """Raised by :func:`planned_jobs`'s stand-in once it has seen enough jobs."""


def planned_jobs(monkeypatch, start: Callable[[], Any], n: int) -> list[dict]:
    """
    The first ``n`` job specs that ``start()`` (``main([...])`` of the study's CLI, or ``run_study(...)``) hands
    to ``run_job``: ``run_job`` is replaced by a stand-in that records each spec and stops the study after the
    ``n``-th.
    """
    import monai_assim.study as study

    specs: list[dict] = []

    def fake_run_job(spec):
        specs.append(spec)
        if len(specs) >= n:
            raise StopStudy
        return {}

    monkeypatch.setattr(study, "run_job", fake_run_job)
    try:
        start()
    except StopStudy:
        return specs
    raise AssertionError(f"the study ran {len(specs)} jobs, fewer than the {n} expected")

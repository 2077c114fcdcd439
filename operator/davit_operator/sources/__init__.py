"""I/O that gathers a canary's figures for analysis; the planners never call it."""

from __future__ import annotations

from typing import Protocol

from davit_operator import api
from davit_operator.planners.analysis import Figures, Window
from davit_operator.sources.prometheus import Prometheus, SourceError, Subject, WindowGoneError
from davit_operator.sources.router import RouterFigures

__all__ = [
    "FigureSource",
    "Prometheus",
    "RouterFigures",
    "SourceError",
    "Subject",
    "WindowGoneError",
]


class FigureSource(Protocol):
    """Reads one revision's figures over a window from the source `settings` name; raises
    SourceError when it cannot."""

    async def figures(
        self, settings: api.Analysis, subject: Subject, window: Window
    ) -> Figures: ...

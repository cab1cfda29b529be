"""One report section per declared analysis (harness.analysis.spec), each registered with
``sections.base.renders``; importing this package registers them all."""

from harness.analysis.sections import comparisons, figures, protocol_effect, published  # noqa: F401
from harness.analysis.sections.base import RENDERERS

__all__ = ["RENDERERS"]

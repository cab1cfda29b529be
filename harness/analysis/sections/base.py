"""The registry of report sections: which function writes the section of each analysis
spec type (harness.analysis.spec.SPECS). A section registers itself where it is defined,
``@renders(SignificanceTable)``, so no second list of the spec types is kept by hand; a
test checks that every spec type has its section."""

from __future__ import annotations

from collections.abc import Callable

RENDERERS: dict[type, Callable] = {}


def renders(spec_type: type) -> Callable[[Callable], Callable]:
    """Register the decorated ``f(writer, spec, frame, recorded, factors)`` as the section
    of ``spec_type``."""
    def register(f: Callable) -> Callable:
        if spec_type in RENDERERS:
            raise ValueError(f"{spec_type.__name__} has two report sections")
        RENDERERS[spec_type] = f
        return f

    return register

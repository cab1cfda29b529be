"""harness: replicate machine-learning papers statistically.

Kept free of heavy imports so that ``harness --help`` answers at once; the stages live in
their own modules (study, entropy, models, data, training, schedule, store, analysis;
docs/architecture.md lists each).
"""

__version__ = "0.1.0"

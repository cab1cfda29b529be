"""harness: replicate machine-learning papers statistically.

Kept free of heavy imports so that ``harness --help`` answers at once; the stages live in
their own modules (study, entropy, models, data, train, schedule, store, analysis).
"""

__version__ = "0.1.0"

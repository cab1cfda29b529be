"""Training: one definition of each training semantic, used by the loop that trains one
replication (loop) and by the packs that train many as one vectorised model (pack):

    stopping     the early-stopping rule and what it monitors, in the protocol's precision
    evaluation   the task losses, a split's loss and accuracy, the final metrics
    diagnostics  the guidance gradient against the task gradient, the entropy profiles
    outcome      what a training produced, the result dict and its provenance
    checks       which configs can train
    numerics     TF32 and subnormal modes
    packing      which replications pack together, and how many
    engines      the packed model's training step
    members      a pack's state: its replications, its models, their stacked weights
    dispatch     alone or packed: the scheduler's unit of work, above both paths

Nothing is imported here, so ``harness.training.stopping`` (numpy only) loads without torch.
"""

PROGRESS_ENV = "HARNESS_PACK_PROGRESS"  # set: each pack epoch is logged (harness run --log plain)

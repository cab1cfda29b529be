"""Measuring the product, outside its training path: ``harness bench`` (bench: a study's
first cell trained plainly, packed and spread, in replications an hour; plain, spread and
measure: the paths it times and what it times them with) and the matmul ceiling a packed
step could reach (ceiling: one step's matmuls recorded and replayed)."""

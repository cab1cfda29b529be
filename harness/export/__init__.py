"""`harness export`: one study's results where researchers already look, as a CSV or
Parquet table (``command``) or as a run per replication in any MLflow tracking store
(``mlflow_runs``). Imports nothing heavy: the ``harness`` command lists it at once."""

from harness.export.command import add_arguments, run
from harness.export.mlflow_runs import MLFLOW_HINT, export_to_mlflow

__all__ = ["add_arguments", "run", "export_to_mlflow", "MLFLOW_HINT"]

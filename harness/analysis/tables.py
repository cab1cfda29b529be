"""Temporary: the names tables.py held before it was split (grouping, significance, by_seed,
summaries, paper_tables, protocol). Removed once the CLI imports them from there."""
from harness.analysis.by_seed import *  # noqa: F401,F403
from harness.analysis.grouping import *  # noqa: F401,F403
from harness.analysis.paper_tables import *  # noqa: F401,F403
from harness.analysis.significance import *  # noqa: F401,F403
from harness.analysis.summaries import *  # noqa: F401,F403

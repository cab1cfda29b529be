"""The base class of errors a user can cause (bad study file, unknown data set or model,
bad override, unreachable database). The CLI prints them as one line and exits non-zero;
anything else is a bug and keeps its traceback."""


class UserError(Exception):
    """An error the user can fix; its message is one line that says how."""

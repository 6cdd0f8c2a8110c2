"""User-facing errors. The CLI prints `AsdError` as one line and exits non-zero;
anything else is a bug and keeps its traceback."""


class AsdError(Exception):
    """Base class: what is wrong and where (file, column, row; tier; URL)."""


class TraceError(AsdError):
    """A trace bundle or an input file is missing, malformed or inconsistent."""


class PolicyError(AsdError):
    """A policy artifact or engine input is invalid."""


class BackendError(AsdError):
    """A model backend failed: server down, model missing, no logprobs."""


class ConfigError(AsdError):
    """A command-line option or config file is invalid."""


class Interrupted(AsdError):
    """The user stopped a run (Ctrl-C) before it had anything to keep; exit 130 as a shell
    reports SIGINT."""

    exit_code = 130


def real_number(name: str, value, error: type[AsdError] = ConfigError) -> float:
    """`value` as a float, or `error` naming `name`: float() also takes "1e3" and True, and its
    own message ("could not convert string to float") does not say which argument was wrong."""
    if not isinstance(value, (str, bytes, bool)):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise error(f"{name}={value!r}: must be a number")


def whole_number(name: str, value, least: int, error: type[AsdError] = ConfigError) -> int:
    """`value` as an int >= `least`, or `error` naming `name` (a fold count, a seed): not a
    bool, a string or 2.5, which numpy and range() would refuse with a TypeError of their own."""
    import numbers

    if isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= least:
        return int(value)
    raise error(f"{name}={value!r}: must be a whole number >= {least}")

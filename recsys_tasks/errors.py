"""Errors that name the problem and what to do; the CLI and task logs print them as one line."""


class AdaptRecError(Exception):
    """Base class: a problem the user can fix. Its message is shown as one line, without a traceback."""

    # Whether trying the same thing again later may succeed (an outage) or cannot (bad input).
    retryable = False


class InputDataError(AdaptRecError):
    """Input files are missing, unreadable or in an unknown format."""


class ConfigError(AdaptRecError):
    """A configuration value or Airflow Param is malformed."""


class DataValidationError(AdaptRecError):
    """The Great Expectations data gate failed."""


class RegistryError(AdaptRecError):
    """The MLflow tracking server or model registry cannot be used as asked."""

    retryable = True


class StageSkipped(AdaptRecError):
    """The stage has nothing to do in this run (switched off, or its precondition did not hold)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (MLflow's ``message`` when it has one), or its type's name."""
    text = getattr(exc, "message", None) or str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__

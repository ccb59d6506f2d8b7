"""User-facing errors.

A `HarnessError` is something the user can fix (bad config, missing data, missing API key, unreachable
judge). The CLI prints its message alone, without a traceback; everything else is a bug and keeps its
traceback.
"""


class HarnessError(Exception):
    """An error the user caused and can fix; the message says what to do."""


class ConfigError(HarnessError):
    """An experiment file is malformed."""


class RegistryError(HarnessError):
    """An unknown or duplicated plugin name."""


class ModelSourceError(HarnessError):
    """A model or tokenizer cannot be found or used."""


class DataSourceError(HarnessError):
    """A prompt set or benchmark data set cannot be found."""


class JudgeError(HarnessError):
    """A judge cannot be reached or keeps answering garbage."""


class BudgetError(HarnessError):
    """A method's setting cannot fit the experiment's matched budget."""


class DiskFullError(HarnessError):
    """The disk is (or would become) full; finished artifacts are kept for the rerun."""

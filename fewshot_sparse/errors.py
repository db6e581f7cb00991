"""Errors that the CLI reports as one clear line (and a non-zero exit), never a traceback."""


class FewshotSparseError(Exception):
    """Base class: bad input from the user (a file, field, shape or setting at fault).

    Not a ValueError: a caller that turns a library's ValueError into one of these (as
    loading a head does) need not first let these through, and the CLI catches exactly
    this class (plus missing files)."""


class DataError(FewshotSparseError):
    """A dataset file or folder is missing, malformed, or does not hold what it should."""


class ConfigError(FewshotSparseError):
    """A configuration key does not exist or has the wrong type or value."""


class CheckpointError(FewshotSparseError):
    """A checkpoint is missing, corrupt, or belongs to another model."""


class OutputError(FewshotSparseError):
    """An output cannot be written (read-only folder, full disk) or would replace a file
    the project did not write, or an earlier result with other settings."""

"""User-facing errors: the CLI turns these into a one-line message and exit code 2."""


class UserError(Exception):
    """A mistake the user can fix (bad config, missing file, bad data); never a bug in coevo."""


class ConfigError(UserError):
    """A configuration key or value is wrong; the message names the key and what is allowed."""


class DataError(UserError):
    """A data file is missing, unreadable or holds values coevo cannot train on."""


class OperatorError(UserError):
    """A pruning operator or schedule raised or broke the mask contract; the message names it."""

"""The errors a command reports as one line (``commands``): anticipated problems with what the
user gave, as opposed to bugs, which keep their traceback."""

from __future__ import annotations


class UserError(ValueError):
    """An anticipated problem with what the user gave (an option, a file); the message names
    the value, what is allowed and, where it helps, what to do."""


class ConfigError(UserError):
    """A configuration value is outside what the simulator allows."""

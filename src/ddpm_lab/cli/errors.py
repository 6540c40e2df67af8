"""The error of a bad config: its own light module, so entry points can catch it without importing torch."""


class ConfigError(ValueError):
    """A config value is invalid; the message says which key, what was wrong and what is allowed."""

"""Type checks of config values, written once: YAML and Hydra give bools where ints are meant (``true`` is an
int to Python), so every count is checked with ``is_int``."""

from __future__ import annotations


def is_int(value: object) -> bool:
    """An int and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """An int or float and not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)

"""The error of a named option outside its allowed values, raised where the option is used (schedules, the
diffusion's types, loss weightings); it carries the key, the value and the allowed values, so the CLI can name
the config key and group without keeping its own copy of the lists."""

from __future__ import annotations

from collections.abc import Iterable


class ChoiceError(ValueError):
    def __init__(self, key: str, value: object, allowed: Iterable[object], what: str | None = None) -> None:
        self.key, self.value, self.allowed = key, value, tuple(allowed)
        super().__init__(f"Unknown {what or key} {value!r}; choose one of: {', '.join(map(str, self.allowed))}.")


def check_choice(key: str, value: object, allowed: Iterable[object], what: str | None = None) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise ChoiceError(key, value, allowed, what)

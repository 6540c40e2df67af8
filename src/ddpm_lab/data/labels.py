"""The one rule about class labels that every DataModule applies in its constructor."""

from __future__ import annotations


def check_conditional(name: str, num_classes: int | None, conditional: bool) -> bool:
    """``conditional`` (conditioning=class) needs a data set with class labels; returns it as a bool."""
    if conditional and num_classes is None:
        raise ValueError(
            f"data={name} has no class labels, so it cannot train a class-conditional model; "
            "conditioning=class needs digits, mnist or cifar10 (or use conditioning=none)."
        )
    return bool(conditional)

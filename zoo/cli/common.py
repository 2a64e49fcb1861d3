"""What every ``zoo`` subcommand's parser shares: one-line errors and the argument types."""

from __future__ import annotations

import argparse

__all__ = ["Parser", "positive_int"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (and exit 2), naming where to get help."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value

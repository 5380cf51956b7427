"""One rule for every option a user passes: integers are Python or numpy integers (never bools), reals
are finite numbers, each inside its documented range; anything else is a one-line SeqgenError."""

from __future__ import annotations

import math
import numbers

from .errors import SeqgenError

SEED_MAX = 2**64 - 1
"""Seeds are integers in 0..SEED_MAX: what numpy's generators and torch.manual_seed both accept."""
MAX_NEW_CHARS = 10_000_000
"""Most characters one call generates per row: a session keeps every token (8 bytes) for the penalty and `text`."""
MAX_BATCH_CHARS = 50_000_000
"""Most characters a batch holds in memory at once (rows x max_new_chars) before returning them."""
MAX_BATCH = 10_000
"""Most sequences run as one batch (sessions, prompts, samples): each holds its states and history."""


def integer(name: str, value: object, low: int | None = None, high: int | None = None) -> int:
    """`value` as an int within [low, high]; bools, floats, strings and None are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise SeqgenError(f"{name} must be an integer{_range(low, high)}, got {value!r}")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise SeqgenError(f"{name} must be an integer{_range(low, high)}, got {number}")
    return number


def real(name: str, value: object, low: float | None = None, high: float | None = None, *,
         above: bool = False) -> float:
    """`value` as a finite float within [low, high] (or (low, high] with `above`); bools and text refused."""
    bound = _range(low, high, above)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SeqgenError(f"{name} must be a number{bound}, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        raise SeqgenError(f"{name} must be a finite number{bound}, got a number too large") from None
    if not math.isfinite(number) or (low is not None and (number <= low if above else number < low)) or (
            high is not None and number > high):
        raise SeqgenError(f"{name} must be a finite number{bound}, got {value!r}")
    return number


def text(value: object, name: str = "text") -> str:
    """`value` if it is a str; None, bytes and numbers are refused (bytes: decode them first)."""
    if not isinstance(value, str):
        raise SeqgenError(f"{name} must be a str, got {type(value).__name__}; decode bytes first")
    return value


def seed(value: object, name: str = "seed") -> int | None:
    """A seed: None (fresh entropy) or an integer in 0..SEED_MAX."""
    return None if value is None else integer(name, value, 0, SEED_MAX)


def _range(low: float | None, high: float | None, above: bool = False) -> str:
    if low is not None and high is not None:
        return f" in {'(' if above else '['}{low}, {high}]"
    if low is not None:
        return f" {'>' if above else '>='} {low}"
    return f" <= {high}" if high is not None else ""

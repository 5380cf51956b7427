"""The one error type seqgen raises for bad input: a single line that names the problem and the fix."""

from __future__ import annotations


class SeqgenError(ValueError):
    """Bad input (a model file, a text, an option): the message says what is wrong and what to do.

    The CLI prints it as one line on stderr and exits with code 2.
    """

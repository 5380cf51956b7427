"""The words a user chooses among, defined once and without imports, so that the command lines offer exactly
what the code accepts without loading numpy to list them."""

UNKNOWN_POLICIES = ("error", "skip", "replace")
"""What encoding does with characters outside the vocabulary: refuse, drop them (as Keras does), or replace them."""
ORDERS = ("frequency", "codepoint")
"""Vocabulary orders: by frequency (Keras' Tokenizer, ties by first appearance) or by code point."""

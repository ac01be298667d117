"""Values quoted in error messages, cut to a bounded length: a message names the bad value
without repeating a 10 MB field (or a YAML alias bomb's expansion) back to the user.

Every layer quotes through here (`models/` and `rewards/` too: this module imports nothing
of the project, and tests/test_layers.py places it below them); tests/test_reliability_messages.py
holds that no error message of the project writes a value with `!r` instead."""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 120  # characters of a value's repr kept in a message
MESSAGE_LIMIT = 2000  # characters of a whole error message the `mro` command prints


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
  """`repr(value)`, cut by `shortened`."""
  return shortened(repr(value), limit)


def shortened(text: str, limit: int = QUOTE_LIMIT) -> str:
  """`text`, or its first `limit` characters and how long it was."""
  if len(text) <= limit:
    return text
  return f"{text[:limit]}... ({len(text)} characters)"

"""Values quoted in error messages, cut to a bounded length: a message names the bad value
without repeating a 10 MB field (or a YAML alias bomb's expansion) back to the user."""

from __future__ import annotations

from typing import Any

QUOTE_LIMIT = 120  # characters of a value's repr kept in a message


def quoted(value: Any, limit: int = QUOTE_LIMIT) -> str:
  """`repr(value)`, cut by `shortened`."""
  return shortened(repr(value), limit)


def shortened(text: str, limit: int = QUOTE_LIMIT) -> str:
  """`text`, or its first `limit` characters and how long it was."""
  if len(text) <= limit:
    return text
  return f"{text[:limit]}... ({len(text)} characters)"

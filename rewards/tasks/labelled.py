"""What the benchmarks judged only against a reference label share (gsm8k, math500).

They have no label-free check (`verify` raises: use the label or a majority vote as the
quality reward's source), accept the compact and protocol formats with a reasoning part
and a boxed protocol answer, and score an extracted answer by `matches`.
"""

from __future__ import annotations

from typing import ClassVar

from . import formats
from .base import Example


class LabelledTask:
  has_verifier: ClassVar[bool] = False
  name: str

  def extract_answer(self, text: str) -> str | None:
    raise NotImplementedError

  def matches(self, example: Example, found: str) -> bool:
    """Whether an extracted answer is the example's reference answer."""
    raise NotImplementedError

  def score(self, example: Example, text: str) -> dict[str, float]:
    found = self.extract_answer(text)
    return {"correct": float(found is not None and self.matches(example, found)),
            "answered": float(found is not None),
            "format": float(self.format_ok(text, style=example.meta.get("style")))}

  def verify(self, example: Example, text: str) -> bool:
    raise NotImplementedError(f"{self.name} has no label-free verifier; use the label or a "
                              "majority vote as the quality reward source")

  def format_ok(self, text: str, *, style: str | None = None) -> bool:
    return formats.style_format_ok(text, style, compact_reasoning=True, protocol_boxed=True)

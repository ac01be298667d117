"""GSM8K: grade-school word problems; the reference is the number after `####`.

Data: `{"question", "answer"}` JSON lines, read with the `datasets` JSON loader. With
no `path`, the shipped copy in `experiments/data/gsm8k/`; `path` may be that kind of directory or a
single file (read whole, in order, whatever the split is called).
Splits: "test" = test.jsonl; "train" and "validation" divide train.jsonl by SHA-256 of
the question (5% validation), so model selection never looks at the test set.

Formats (the worked solution is the dataset's, without its `<<48/2=24>>` annotations)
  compact   prompt = the question
            target `<think>SOLUTION</think><answer>72</answer>`
  protocol  d1's prompt (system prompt, blank line, question); target
            `<reasoning>\\nSOLUTION\\n</reasoning>\\n<answer>\\n\\boxed{72}\\n</answer>`.
            d1 also appends "<reasoning>" after the chat template; that is the
            prompting layer's business (format_ok accepts a missing opening tag).

Scoring: the number in the last balanced `\\boxed{}`, else in the last `<answer>`, else
the last number in the text (thousands separators, "$", signs handled; see
`numeric.py`; d1 drops minus signs, so 2 test items could never be right there), equal
as an exact decimal to the `####` number ("1,000" = "1000", "5.00" = "5"). There is
no label-free check: `verify` raises NotImplementedError (use label or vote).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from mro.messages import quoted

from . import data, formats
from .base import (Example, check_limit, check_split, check_style, hashed_split,
                   register)
from .labelled import LabelledTask
from .numeric import canonical, numeric_answer, parse_number

VALIDATION_FRACTION = 0.05
_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")


def reference_answer(solution: str) -> str:
  """The canonical number after `####` in a GSM8K answer field."""
  parts = solution.split("####")
  if len(parts) != 2:
    raise ValueError(f"a GSM8K answer has exactly one '####', got {quoted(solution[-80:])}")
  value = parse_number(parts[1])
  if value is None:
    raise ValueError(f"the text after '####' is not a number: {quoted(parts[1].strip())}")
  return canonical(value)


def worked_solution(solution: str) -> str:
  """The reasoning part of a GSM8K answer field, without calculator annotations."""
  return _CALCULATOR_RE.sub("", solution.split("####")[0]).strip()


def split_of(question: str) -> str:
  """"train" or "validation" for a question of train.jsonl."""
  return hashed_split(f"gsm8k:{question}", test=0.0, validation=VALIDATION_FRACTION)


@dataclasses.dataclass(frozen=True)
class GSM8KTask(LabelledTask):
  name: str = "gsm8k"

  def examples(self, split: str, *, path: str | None = None, limit: int | None = None,
               seed: int = 0, style: str = "compact") -> list[Example]:
    """Rows of `split` in file order (first `limit`); `seed` is unused (no sampling)."""
    check_split(split)
    check_style(style)
    check_limit(limit)
    filename = "test.jsonl" if split == "test" else "train.jsonl"
    if data.is_hub(path):
      file = path
      rows = list(enumerate(data.read_hub(path, filename.split(".")[0],
                                          ("question", "answer")), start=1))
    else:
      file = data.resolve_file(path, "gsm8k", filename)
      rows = list(enumerate(data.read_jsonl_datasets(file, ("question", "answer")), start=1))
    if split != "test" and (path is None or data.is_hub(path)
                            or Path(path).expanduser().is_dir()):
      rows = [(n, r) for n, r in rows if split_of(r["question"]) == split]
    out = []
    for number, row in rows[:limit]:
      try:
        answer = reference_answer(row["answer"])
      except ValueError as e:
        raise ValueError(f"{file} row {number}: {e}") from e
      out.append(self._example(f"{self.name}-{split}-{len(out):05d}", row, answer, style,
                               number))
    return out

  def _example(self, id_: str, row: dict, answer: str, style: str, row_number: int) -> Example:
    reasoning = worked_solution(row["answer"])
    meta = {"style": style, "row": row_number}
    if style == "compact":
      return Example(id_, row["question"], formats.compact_response(answer, reasoning),
                     answer, meta)
    return Example(id_, formats.protocol_prompt(formats.D1_MATH_SYSTEM_PROMPT, row["question"]),
                   formats.protocol_response(reasoning, answer), answer, meta)

  def extract_answer(self, text: str) -> str | None:
    return numeric_answer(text)

  def matches(self, example: Example, found: str) -> bool:
    return found == example.answer


register(GSM8KTask())

"""Response formats of the two prompt styles, and the shared protocol prompt.

compact  (the project's tiny models, R1 style)
         `<think>REASONING</think><answer>ANSWER</answer>` for tasks with reasoning,
         `<answer>ANSWER</answer>` for tasks without (sudoku). No spaces or newlines
         between the parts of generated targets: every character costs a token.
protocol (d1 evaluation prompts)
         `<reasoning>\\nREASONING\\n</reasoning>\\n<answer>\\nANSWER\\n</answer>`, where
         ANSWER is `\\boxed{...}` for the tasks whose prompt asks for it.

Format checks are tolerant of whitespace around and between the parts, of any trailing
text after `</answer>` that holds no tag (e.g. EOS padding the decoder did not strip),
and, in the protocol style, of a missing opening `<reasoning>` (d1 appends it to the
prompt, so the response starts inside the reasoning). They require: the tags exactly
once each and in order, nothing but whitespace before the first tag and between
`</think>`/`</reasoning>` and `<answer>`, a non-empty answer, and (if asked) a balanced
`\\boxed{}` inside the answer.
"""

from __future__ import annotations

import re

from .base import check_style, last_boxed

# d1's answer-format instruction, shared by its math and Countdown system prompts
D1_BOXED_FORMAT = ("Respond in the following format:\n<reasoning>\nYour reasoning here\n"
                   "</reasoning>\n<answer>\n\\boxed{...}\n</answer>")
D1_MATH_SYSTEM_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by "
    "step. Wrap the final answer in a \\boxed{}. \n" + D1_BOXED_FORMAT)

# The compact format's tags: a tokenizer trained on a task's texts (`mro train`) makes each
# one token.
COMPACT_TAGS = ("<think>", "</think>", "<answer>", "</answer>")
_TAG_RE = re.compile(r"</?(?:think|reasoning|answer)>")


def tagged_format_ok(text: str, reasoning_tag: str | None, *, optional_open: bool = False,
                     boxed: bool = False) -> bool:
  """Whether `text` is `[<tag>]...</tag> <answer>...</answer> [trailing]` (see above)."""
  body = text.strip()
  tags = list(_TAG_RE.finditer(body))
  names = [m.group() for m in tags]
  answer_tags = ["<answer>", "</answer>"]
  if reasoning_tag is None:
    if names != answer_tags:
      return False
  else:
    full = [f"<{reasoning_tag}>", f"</{reasoning_tag}>"] + answer_tags
    if not (names == full or (optional_open and names == full[1:])):
      return False
    between = body[tags[-3].end():tags[-2].start()]
    if between.strip():
      return False
  if names[0] in ("<answer>", f"<{reasoning_tag}>") and tags[0].start() != 0:
    return False
  answer = body[tags[-2].end():tags[-1].start()]
  if not answer.strip():
    return False
  return not boxed or last_boxed(answer) is not None


def style_format_ok(text: str, style: str | None, *, compact_reasoning: bool,
                    protocol_boxed: bool) -> bool:
  """The format check of `style` ("compact", "protocol", or None for either)."""
  check_style(style, allow_none=True)
  if style in (None, "compact"):
    if tagged_format_ok(text, "think" if compact_reasoning else None):
      return True
  if style in (None, "protocol"):
    if tagged_format_ok(text, "reasoning", optional_open=True, boxed=protocol_boxed):
      return True
  return False


def compact_response(answer: str, reasoning: str | None = None) -> str:
  head = "" if reasoning is None else f"<think>{reasoning}</think>"
  return f"{head}<answer>{answer}</answer>"


def protocol_response(reasoning: str, answer: str, *, boxed: bool = True) -> str:
  shown = f"\\boxed{{{answer}}}" if boxed else answer
  return f"<reasoning>\n{reasoning}\n</reasoning>\n<answer>\n{shown}\n</answer>"


def protocol_prompt(system_prompt: str, question: str) -> str:
  """d1's user message: the system prompt, a blank line, the question."""
  return f"{system_prompt}\n\n{question}"

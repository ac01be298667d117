"""Tasks: data (files or generators), prompts, answer extraction, scoring, verifiers.

Importing the package registers the built-in tasks: sudoku, countdown, arith, gsm8k,
math500. See README.md in this folder for the formats and how to add a task.
"""

from .base import (SPLITS, STYLES, Example, Task, extract_answer_text, get_task,
                   majority_answer, register, task_names)
from .arith import ArithTask
from .countdown import CountdownTask
from .gsm8k import GSM8KTask
from .math500 import Math500Task
from .sudoku import SudokuTask

__all__ = [
    "SPLITS", "STYLES", "Example", "Task", "extract_answer_text", "get_task",
    "majority_answer", "register", "task_names", "ArithTask", "CountdownTask",
    "GSM8KTask", "Math500Task", "SudokuTask",
]

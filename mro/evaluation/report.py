"""What `mro eval` prints and where it writes: tables, progress lines, file names.

A record is one JSON object per evaluated setting (written by `mro.evaluation.runner`);
everything here reads records only, so `mro plot`, sweep summaries and the benchmark
tables format results the same way whether they are fresh or read back from a file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any


def generations_path(out: str | Path) -> Path:
  """results.jsonl -> results.generations.jsonl (same folder)."""
  out = Path(out)
  return out.with_name(f"{out.stem}.generations.jsonl")



_MAIN_KEYS = ("correct", "format")  # shown as accuracy and format


def group_names(records: Sequence[dict[str, Any]]) -> list[str]:
  """The example groups the records report accuracy for (e.g. several, unique)."""
  return sorted({k for r in records for k in (r.get("groups") or {})})


def group_cell(record: dict[str, Any], group: str, percent: bool = False) -> str:
  g = (record.get("groups") or {}).get(group)
  if g is None:
    return "-"
  return f"{100 * g['accuracy']:.1f}" if percent else f"{g['accuracy']:.4f}"


def format_table(records: Sequence[dict[str, Any]]) -> str:
  """A plain-text table: one row per record, accuracy per example group (when the task
  names groups) and the task's extra metrics as columns."""
  extras = sorted({k for r in records for k in r["metrics"] if k not in _MAIN_KEYS})
  groups = group_names(records)
  head = ["task", "protocol", "search", "steps", "n", "accuracy",
          *(f"acc {g}" for g in groups), *extras, "format",
          "NFE/prompt", "scorer NFE", "tok/s", "seconds", "commits"]
  rows = [head]
  for r in records:
    tps = r.get("tokens_per_second")
    rows.append([r["task"], r["protocol"], search_label(r), str(r["steps"]), str(r["n"]),
                 f"{r['accuracy']:.4f}", *(group_cell(r, g) for g in groups),
                 *(f"{r['metrics'][k]:.4f}" if k in r["metrics"] else "-" for k in extras),
                 f"{r['format_rate']:.4f}", nfe_text(r.get('nfe_per_prompt', 0)),
                 f"{r.get('scorer_nfe_per_prompt', 0):.0f}",
                 "-" if tps is None else f"{tps:.1f}", f"{r['seconds']:.1f}",
                 commit_rule(r)])
  widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
  return "\n".join("  ".join(c.rjust(w) if j > 1 else c.ljust(w)
                             for j, (c, w) in enumerate(zip(row, widths))).rstrip()
                   for row in rows)


def _rewards_text(record: dict[str, Any]) -> str:
  spec = (record.get("rewards") or {}).get("spec", "none")
  return spec.replace(",", "+")


def commit_rule(record: dict[str, Any]) -> str:
  """The table's `commits` column, without spaces: `fixed` (the same number of tokens each
  step), `thr=0.999` (a threshold rule), `thr=0.999,budget` (kept to the steps),
  `factor=1`, with `+corr<0.5` for token correction; `stages` for the cascade."""
  if (record.get("search") or {}).get("method") == "cascade":
    return "stages"
  sampler = record.get("sampler") or {}
  if sampler.get("threshold") is not None:
    rule = f"thr={sampler['threshold']:g}"
  elif sampler.get("factor") is not None:
    rule = f"factor={sampler['factor']:g}"
  else:
    rule = "fixed"
  if rule != "fixed" and sampler.get("fixed_steps"):
    rule += ",budget"
  if sampler.get("correct_below") is not None:
    rule += f"+corr<{sampler['correct_below']:g}"
  return rule


def search_label(record: dict[str, Any]) -> str:
  """The short search column of `mro eval`'s table: -, best-of-4:tv+ppl, mro:k4:w3:..."""
  s = record.get("search")
  if not s:
    return "-"
  if s["method"] == "cascade":
    return f"cascade:{len(s['stages'])}"
  extra = "".join(f":{tag}{s[key]}" for key, tag in (("branch_steps", "b"),
                                                     ("final_verify", "fv"))
                  if s.get(key) is not None)
  if s["method"] == "best-of-n":
    return f"best-of-{s['k'] * s['n_live']}:{_rewards_text(record)}{extra}"
  return f"mro:k{s['k']}:w{s['group_steps']}:{s['select']}:{_rewards_text(record)}{extra}"


def nfe_text(nfe: float) -> str:
  """Forward passes per prompt: a whole number as is, a mean (adaptive decoding) with one
  decimal, so 3.5 passes never reads as 3 or 4."""
  return f"{nfe:.0f}" if float(nfe).is_integer() else f"{nfe:.1f}"


def setting_label(record: dict[str, Any]) -> str:
  """A readable name for what makes a setting: `plain sampler`, `best-of-4 (tv+ppl)`,
  `MRO search k=4 w=3 argmax (tv+ppl+q, q by vote, τ=0.25)`; a threshold is appended."""
  s, r = record.get("search"), record.get("rewards") or {}
  sampler = record.get("sampler") or {}
  threshold = sampler.get("threshold")
  extra = f", threshold {threshold:g}" if threshold is not None else ""
  if extra and sampler.get("fixed_steps"):
    extra += " within the steps"
  if sampler.get("correct_below") is not None:
    rows = sampler.get("correct_rows")
    extra += (f", token correction < {sampler['correct_below']:g}"
              + (f" ({rows} row{'s' * (rows > 1)})" if rows else ""))
  if not s:
    return "plain sampler" + extra
  if s["method"] == "cascade":
    level = "" if s.get("accept") is None else f" ≥ {s['accept']:g}"
    return f"verified cascade ({' → '.join(s['stages'])}; R_tv in {s['verify_chunks']} " \
           f"rows{level})"
  q = f", q by {r['quality_source']}" if "q" in r.get("use", ()) else ""
  n_verify = r.get("n_verify", 1)
  if "tv" in r.get("use", ()) and n_verify != 1:
    q = f", tv over {'all' if n_verify == 'all' else n_verify} positions" + q
  temp = "" if s["temperature"] == 1.0 else f", τ={s['temperature']:g}"
  if s.get("branch_steps") is not None:
    temp += f", sampled in the first {s['branch_steps']} steps then greedy"
  if s.get("final_verify") is not None:
    rows = "one row per position" if s["final_verify"] == "all" else \
        f"{s['final_verify']} rows"
    temp += f", final tv over the whole answer ({rows})"
  inside = f"{_rewards_text(record)}{q}{temp}{extra}"
  if s["method"] == "best-of-n":
    return f"best-of-{s['k'] * s['n_live']} ({inside})"
  return f"MRO search k={s['k']} w={s['group_steps']} {s['select']} ({inside})"


def latest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One record per (model, method, steps): a setting run again replaces its earlier
  result (kept at the position where it first appeared)."""
  rows: dict[tuple[str, str, int], dict[str, Any]] = {}
  for r in records:
    rows[(str(r.get("model")), setting_label(r), r["steps"])] = r
  return list(rows.values())


def markdown_table(records: list[dict[str, Any]]) -> str:
  """The result tables of docs/results.md: one row per setting (its latest result), with
  a model column when the records hold more than one model."""
  extra = "cell_accuracy" if any("cell_accuracy" in r["metrics"] for r in records) else None
  groups = group_names(records)
  models = len({str(r.get("model")) for r in records}) > 1
  head = ["model"] * models + ["method", "steps", "accuracy %"] + [
      f"{g} %" for g in groups] + (["cell acc. %"] if extra else []) + [
      "NFE / prompt", "scorer NFE", "seconds"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in latest(records):
    row = [f"`{r.get('model')}`"] * models + [
        setting_label(r), str(r["steps"]), f"{100 * r['accuracy']:.1f}",
        *(group_cell(r, g, percent=True) for g in groups)]
    if extra:
      row.append(f"{100 * r['metrics'][extra]:.1f}")
    row += [nfe_text(r['nfe_per_prompt']), str(r.get("scorer_nfe_per_prompt", 0)),
            f"{r['seconds']:.0f}"]
    lines.append("| " + " | ".join(row) + " |")
  return "\n".join(lines)


def progress_line(record: dict[str, Any]) -> str:
  return (f"{record['task']} {record['protocol']} steps={record['steps']}: accuracy "
          f"{record['accuracy']:.4f} on {record['n']} in {record['seconds']:.1f}s")

"""The README's result tables (experiments/bench/tables.py) label each setting correctly."""

from experiments.bench import tables


def record(search=None, **kw):
  base = {"task": "sudoku", "n": 8, "steps": 6, "accuracy": 0.875, "nfe_per_prompt": 24.0,
          "seconds": 3.2, "metrics": {"cell_accuracy": 0.95}}
  if search:
    base["search"] = search
    base["search_config"] = {"group_steps": 3, "k": 4, "n_live": 1}
  return {**base, **kw}


def search(kind="mro", rewards="tv,ppl,q", source="vote", temperature=1.0, select="argmax"):
  return {"search": kind, "k": 4, "rewards": rewards, "quality_source": source,
          "search_temperature": temperature, "select": select}


def test_methods_name_search_selection_rewards_and_quality_source():
  assert tables.method(record()) == "plain sampler"
  assert tables.method(record(search(kind="none"))) == "plain sampler"
  assert tables.method(record(search(kind="best-of-n", rewards="tv,ppl"))) == \
      "best-of-4 (tv+ppl)"
  assert tables.method(record(search(select="resample"))) == \
      "MRO search k=4 w=3 resample (tv+ppl+q, q by vote)"
  assert tables.method(record(search(source="verifier", temperature=0.25))) == \
      "MRO search k=4 w=3 argmax (tv+ppl+q, q by verifier, τ=0.25)"


def test_table_rows_carry_accuracy_extra_metric_nfe_and_seconds():
  text = tables.table([record(), record(search(), accuracy=0.9, nfe_per_prompt=32.0)])
  lines = text.splitlines()
  assert lines[0] == ("| method | steps | accuracy % | cell acc. % | NFE / prompt | scorer NFE "
                      "| seconds |")
  assert lines[2] == "| plain sampler | 6 | 87.5 | 95.0 | 24 | 0 | 3 |"
  assert lines[3].startswith("| MRO search k=4 w=3 argmax") and "| 90.0 | 95.0 | 32 | 8 |" in lines[3]
  no_extra = tables.table([record(metrics={})])
  assert "cell acc." not in no_extra


def test_a_setting_run_twice_shows_its_latest_result_once():
  text = tables.table([record(accuracy=0.5), record(search()), record(accuracy=0.75)])
  rows = text.splitlines()[2:]
  assert len(rows) == 2
  assert rows[0].startswith("| plain sampler | 6 | 75.0 |")
  other_steps = tables.table([record(), record(steps=12)])
  assert len(other_steps.splitlines()) == 4


def test_scorer_passes_are_read_from_the_record_or_recomputed_from_its_search():
  assert tables.scorer_nfe(record()) == 0
  assert tables.scorer_nfe(record(search())) == 4 * (6 // 3)
  assert tables.scorer_nfe(record(search(rewards="tv,q"))) == 0
  assert tables.scorer_nfe(record(search(), scorer_nfe_per_prompt=5)) == 5

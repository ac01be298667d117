"""The result tables of docs/results.md (mro/evaluation/report.py, printed by
experiments/bench/tables.py) label each setting correctly."""

from mro.evaluation import report


def record(search=None, rewards=None, **kw):
  base = {"task": "sudoku", "n": 8, "steps": 6, "accuracy": 0.875, "nfe_per_prompt": 24.0,
          "seconds": 3.2, "metrics": {"cell_accuracy": 0.95}, "search": search,
          "rewards": rewards, "sampler": {"threshold": None}}
  return {**base, **kw}


def search(method="mro", temperature=1.0, select="argmax"):
  return {"method": method, "k": 4, "n_live": 1, "group_steps": 3,
          "temperature": temperature, "select": "none" if method == "best-of-n" else select}


def rewards(spec="tv,ppl,q", source="vote"):
  return {"spec": spec, "use": spec.split(","), "quality_source": source}


def test_methods_name_search_selection_rewards_and_quality_source():
  assert report.setting_label(record()) == "plain sampler"
  assert report.setting_label(record(sampler={"threshold": 0.9})) == \
      "plain sampler, threshold 0.9"
  assert report.setting_label(record(sampler={"threshold": 0.9, "fixed_steps": True})) == \
      "plain sampler, threshold 0.9 within the steps"
  assert report.setting_label(record(search("best-of-n"), rewards("tv,ppl"))) == \
      "best-of-4 (tv+ppl)"
  assert report.setting_label(record(search(select="resample"), rewards())) == \
      "MRO search k=4 w=3 resample (tv+ppl+q, q by vote)"
  assert report.setting_label(record(search(temperature=0.25), rewards(source="verifier"))) \
      == "MRO search k=4 w=3 argmax (tv+ppl+q, q by verifier, τ=0.25)"
  assert report.search_label(record(search(), rewards("tv,ppl"))) == "mro:k4:w3:argmax:tv+ppl"
  assert report.search_label(record()) == "-"


def test_table_rows_carry_accuracy_extra_metric_nfe_and_seconds():
  text = report.markdown_table([record(), record(search(), rewards(), accuracy=0.9,
                                                 nfe_per_prompt=32.0,
                                                 scorer_nfe_per_prompt=8)])
  lines = text.splitlines()
  assert lines[0] == ("| method | steps | accuracy % | cell acc. % | NFE / prompt | scorer NFE "
                      "| seconds |")
  assert lines[2] == "| plain sampler | 6 | 87.5 | 95.0 | 24 | 0 | 3 |"
  assert lines[3].startswith("| MRO search k=4 w=3 argmax")
  assert "| 90.0 | 95.0 | 32 | 8 |" in lines[3]
  no_extra = report.markdown_table([record(metrics={})])
  assert "cell acc." not in no_extra


def test_a_setting_run_twice_shows_its_latest_result_once():
  text = report.markdown_table([record(accuracy=0.5), record(search(), rewards()),
                                record(accuracy=0.75)])
  rows = text.splitlines()[2:]
  assert len(rows) == 2
  assert rows[0].startswith("| plain sampler | 6 | 75.0 |")
  other_steps = report.markdown_table([record(), record(steps=12)])
  assert len(other_steps.splitlines()) == 4


def test_a_mean_forward_pass_count_keeps_its_decimal():
  from mro.evaluation.report import nfe_text
  assert (nfe_text(24), nfe_text(24.0), nfe_text(3.5), nfe_text(1.4375)) == (
      "24", "24", "3.5", "1.4")


def test_the_same_setting_on_two_models_keeps_a_row_each_under_a_model_column():
  text = report.markdown_table([record(model="default", accuracy=0.5),
                                record(model="default-mro", accuracy=0.75)])
  lines = text.splitlines()
  assert lines[0].startswith("| model | method | steps |") and len(lines) == 4
  assert lines[2].startswith("| `default` | plain sampler | 6 | 50.0 |")
  assert lines[3].startswith("| `default-mro` | plain sampler | 6 | 75.0 |")
  assert not report.markdown_table([record(model="default")]).startswith("| model")

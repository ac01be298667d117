"""Plots of `mro eval` results (mro/evaluation/plot.py, `mro plot`): one curve per model,
task, protocol, data and decoder settings, x axes at their cost, PNGs from a results file
alone, and bad input refused by name."""

import json

import pytest

from mro import cli
from mro.evaluation import plot

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
  code = cli.main(list(argv))
  out, err = capsys.readouterr()
  return code, out, err


def record(**kw):
  base = {"model": "m", "task": "sudoku", "protocol": "compact", "steps": 24, "accuracy": 0.5,
          "data": None, "search": None, "rewards": None,
          "sampler": {"gen_length": 24, "block_length": 24, "temperature": 0.0,
                      "remasking": "low_confidence", "threshold": None, "cfg_scale": 0.0}}
  return {**base, **kw}


def test_plot_curves_keep_search_data_and_sampler_settings_apart():
  search = {"method": "mro", "k": 4, "n_live": 1, "group_steps": 3, "temperature": 1.0,
            "select": "argmax"}
  rewards = {"spec": "tv,ppl", "use": ["tv", "ppl"], "quality_source": "vote"}
  rows = [record(), record(steps=6), record(steps=6, search=search, rewards=rewards),
          record(data="a/sudoku_12.csv"), record(data="b/sudoku_8.csv"),
          record(sampler={**record()["sampler"], "block_length": 8})]
  lines = plot.curves(rows)
  assert len(lines) == 5  # only the two plain rows on the default data share a curve
  assert any(len(points) == 2 for points in lines.values())
  labels = " | ".join(lines)
  assert "MRO search k=4 argmax (tv+ppl)" in labels and "sudoku_12.csv" in labels
  assert "block_length=8" in labels


def test_mro_points_of_one_setting_share_a_line_whatever_their_w_unless_they_collide():
  search = {"method": "mro", "k": 4, "n_live": 1, "group_steps": 3, "temperature": 1.0,
            "select": "argmax"}
  rewards = {"spec": "tv,ppl", "use": ["tv", "ppl"], "quality_source": "vote"}
  at = lambda steps, w, acc: record(steps=steps, accuracy=acc, rewards=rewards,
                                    search={**search, "group_steps": w})
  lines = plot.curves([at(6, 3, 0.9), at(3, 1, 0.6), at(12, 6, 0.96)])
  assert list(lines.values()) == [[(3.0, 0.6), (6.0, 0.9), (12.0, 0.96)]]
  assert plot._points([at(6, 3, 0.9), at(3, 1, 0.6)], "steps")[next(iter(lines))][0] == \
      (3.0, (0.6, "w=1"))  # w is written beside its point
  both = plot.curves([at(6, 3, 0.9), at(6, 2, 0.8), at(12, 6, 0.96)])
  assert len(both) == 3 and all(" w=" in label for label in both)  # two w at x = 6


def test_adaptive_decoders_are_drawn_at_their_forward_passes_and_say_so():
  thr = {**record()["sampler"], "threshold": 0.99}
  cascade = {"method": "cascade", "stages": ["threshold=0.99", "steps=L"], "verify_chunks": 3,
             "accept": None}
  rows = [record(nfe_per_prompt=24), record(sampler=thr, nfe_per_prompt=3.5, denoising_steps=4),
          record(search=cascade, nfe_per_prompt=12.1, denoising_steps=None)]
  lines = plot.curves(rows)  # x = steps
  assert sorted(lines.values()) == [[(3.5, 0.5)], [(12.1, 0.5)], [(24.0, 0.5)]]
  adaptive = [label for label in lines if label.endswith(plot.ADAPTIVE_NOTE)]
  assert len(adaptive) == 2 and not any("plain sampler ·" in a for a in adaptive)


def test_a_curve_names_its_data_and_the_axis_is_in_percent(tmp_path, monkeypatch):
  rows = [record(), record(steps=12, accuracy=0.75), record(data="x/sudoku_test_12blanks.csv")]
  labels = list(plot.curves(rows))
  assert "test split (8 blanks)" in labels[0] and "sudoku_test_12blanks.csv" in labels[1]
  drawn = {}
  save = plot.save_axes
  monkeypatch.setattr(plot, "save_axes", lambda fig, ax, out, **kw: drawn.update(
      ys=[y for line in ax.get_lines() for y in line.get_ydata()], **kw) or save(
          fig, ax, out, **kw))
  plot.plot_results(rows, tmp_path / "acc.png")
  assert drawn["ylabel"] == "accuracy %" and sorted(drawn["ys"]) == [50.0, 50.0, 75.0]


def test_plot_x_axes_put_thresholds_and_steps_at_their_cost(tmp_path):
  thr = {**record()["sampler"], "threshold": 0.9}
  rows = [record(nfe_per_prompt=24, seconds=20.0),
          record(steps=12, nfe_per_prompt=12, seconds=10.0, accuracy=0.4),
          record(sampler=thr, nfe_per_prompt=3.5, seconds=4.0, accuracy=0.3),
          record(sampler={**thr, "threshold": 0.7}, nfe_per_prompt=2.0, seconds=3.0,
                 accuracy=0.2)]
  by_nfe = plot.curves(rows, x="nfe")
  assert sorted(by_nfe.values()) == [[(2.0, 0.2), (3.5, 0.3)], [(12.0, 0.4), (24.0, 0.5)]]
  assert sorted(plot.curves(rows, x="seconds").values())[0] == [(3.0, 0.2), (4.0, 0.3)]
  assert plot.plot_results(rows, tmp_path / "nfe.png", x="nfe").stat().st_size > 0
  with pytest.raises(ValueError, match="x must be one of"):
    plot.curves(rows, x="flops")


def test_curve_labels_name_verification_and_correction_and_share_their_common_prefix():
  search = {"method": "mro", "k": 4, "n_live": 1, "group_steps": 3, "temperature": 1.0,
            "select": "argmax"}
  tv_all = {"spec": "tv,ppl", "use": ["tv", "ppl"], "quality_source": "vote",
            "n_verify": "all"}
  corrected = {**record()["sampler"], "correct_below": 0.5, "correct_rows": None}
  rows = [record(search=search, rewards={**tv_all, "n_verify": 1}),
          record(search=search, rewards=tv_all), record(sampler=corrected)]
  labels = list(plot.curves(rows))
  assert len(labels) == 3 and "tv over all positions" in labels[1]
  assert labels[2].endswith("plain sampler, token correction < 0.5")
  shared, short = plot.split_labels(labels)
  assert shared == "m · sudoku · compact · test split (8 blanks)"
  assert short[2] == "plain sampler, token correction < 0.5"


def test_the_default_rule_is_named_once_and_kept_apart_from_the_fixed_schedule():
  """compact's default on Sudoku (threshold 0.999 kept to the steps) is named by the setting
  label, not listed again as a changed sampler field; against cost it is its own curve."""
  fixed = record(sampler={**record()["sampler"], "fixed_steps": False})
  rule = record(sampler={**record()["sampler"], "threshold": 0.999, "fixed_steps": True})
  unbounded = record(sampler={**record()["sampler"], "threshold": 0.999, "fixed_steps": False})
  label = plot.curve_label(rule)
  assert label.endswith("plain sampler, threshold 0.999 within the steps"), label
  assert "[" not in label and "plain sampler" in plot.curve_label(fixed)
  assert "[" not in plot.curve_label(fixed)
  by_cost = {plot.curve_label(r, "nfe") for r in (fixed, rule, unbounded)}
  assert len(by_cost) == 3 and any(x.endswith("threshold rule within the steps")
                                   for x in by_cost)


def test_plot_writes_a_png_from_the_results_file_alone(eval_run, tmp_path):
  cfg, _, _, _ = eval_run
  png = plot.plot_results(cfg.out, tmp_path / "acc.png")
  data = png.read_bytes()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_plot_draws_one_line_per_model_task_and_protocol_and_skips_torn_lines(eval_run,
                                                                            tmp_path):
  _, records, _, _ = eval_run
  other = [dict(r, protocol="d1") for r in records]
  path = tmp_path / "res.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in records + other) + '{"torn": ')
  lines = plot.curves(plot.read_results(path))
  assert len(lines) == 2
  for pts in lines.values():
    assert [x for x, _ in pts] == [2.0, 4.0, 16.0]


def test_plot_refuses_a_missing_or_empty_results_file_and_a_non_png_path(eval_run, tmp_path):
  with pytest.raises(ValueError, match="does not exist"):
    plot.plot_results(tmp_path / "none.jsonl", tmp_path / "a.png")
  (tmp_path / "empty.jsonl").write_text("\n")
  with pytest.raises(ValueError, match="no `mro eval` result"):
    plot.plot_results(tmp_path / "empty.jsonl", tmp_path / "a.png")
  with pytest.raises(ValueError, match="PNG"):
    plot.plot_results(eval_run[0].out, tmp_path / "a.pdf")


def test_plot_verb_draws_a_png_next_to_the_results_by_default(cli_evaluated, tmp_path, capsys):
  results = cli_evaluated[3]
  code, out, err = run(capsys, "plot", str(results))
  assert code == 0, err
  assert results.with_suffix(".png").read_bytes().startswith(PNG_SIGNATURE)
  code, out, err = run(capsys, "plot", str(results), "--out", str(tmp_path / "p.png"))
  assert code == 0 and (tmp_path / "p.png").read_bytes().startswith(PNG_SIGNATURE)


def test_plot_of_a_missing_results_file_exits_2(tmp_path, capsys):
  code, _, err = run(capsys, "plot", str(tmp_path / "none.jsonl"))
  assert code == 2 and err.startswith("mro plot: error:") and "does not exist" in err

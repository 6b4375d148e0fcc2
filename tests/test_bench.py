"""`ponder bench` plumbing (not its speed): one config measured through the trainer's step, the --compare report."""

import json

import pytest
import torch

from ponder import UserError
from ponder.bench import bench_config, format_compare, run_bench


def test_bench_config_counts_flops_and_memory():
    r = bench_config("sudoku-extreme-trm-mlp", ["model.hidden=32", "model.n_heads=2", "model.n_supervision=2"], 4,
                     torch.float32, torch.device("cpu"), seconds=0.0)
    assert r["params"] > 0 and r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
    # forward + backward FLOPs of one step: at least 3 x 2 x weights x tokens of the one recursion with gradient
    tokens = 4 * (81 + 16)
    assert r["step_gflop"] * 1e9 > 6 * 0.5 * r["params"] * tokens
    assert r["peak_mb"] is None or r["peak_mb"] > 0


def test_compare_report_and_bad_files(tmp_path):
    run = {"configs": {"trm-mlp small": {"train_examples_per_s": 20.0, "eval_examples_per_s": 10.0,
                                         "ceiling_ratio": 0.6}}}
    old = {"machine": {"device": "cpu", "torch": "x"}, "runs": {"float32": run}}
    new = {"runs": {"float32": {"configs": {"trm-mlp small": {"train_examples_per_s": 30.0,
                                                              "eval_examples_per_s": 5.0, "ceiling_ratio": 0.9}}}}}
    text = format_compare(new, old, "old.json")
    assert "train x1.50" in text and "eval x0.50" in text and "60.0% -> 90.0%" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(UserError, match="not a bench JSON"):
        run_bench(tmp_path / "out.json", compare=str(bad))
    with pytest.raises(UserError, match="unknown family"):
        run_bench(tmp_path / "out.json", families="trm-mlp,nope")
    assert not (tmp_path / "out.json").exists()

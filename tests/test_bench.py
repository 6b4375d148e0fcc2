"""`ponder bench` plumbing (not its speed): one config measured through the trainer's step, the --compare report."""

import json

import pytest
import torch

from ponder import UserError
from ponder.bench import KernelLog, bench_config, format_compare, kernel_bound, run_bench


def test_bench_config_counts_flops_and_memory():
    r = bench_config("sudoku-extreme-trm-mlp", ["model.hidden=32", "model.n_heads=2", "model.n_supervision=2"], 4,
                     torch.float32, torch.device("cpu"), seconds=0.0)
    assert r["params"] > 0 and r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
    # forward + backward FLOPs of one step: at least 3 x 2 x weights x tokens of the one recursion with gradient
    tokens = 4 * (81 + 16)
    assert r["step_gflop"] * 1e9 > 6 * 0.5 * r["params"] * tokens
    assert r["peak_mb"] is None or r["peak_mb"] > 0
    # the kernel bound: each counted call timed alone, so it is shorter than the whole step
    assert 0 < r["kernel_s"] < r["step_s"] and r["kernel_bound_gflops"] > r["train_gflops"]


def test_kernel_log_matches_flop_counter_and_groups_calls():
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    x, w = torch.randn(6, 5, requires_grad=True), torch.randn(7, 5, requires_grad=True)
    q = torch.randn(2, 3, 9, 4, requires_grad=True)

    def fn():
        h = torch.nn.functional.linear(x, w)  # (6,5)@(5,7): 2*6*5*7 = 420 FLOPs
        h = h @ w  # (6,7)@(7,5): 420
        a = torch.nn.functional.scaled_dot_product_attention(q, q, q)
        (h.sum() + a.sum()).backward()

    with FlopCounterMode(display=False) as counter:
        fn()
    log = KernelLog()
    with log:
        fn()
    assert log.flops == counter.get_total_flops() > 840
    mms = [(c[3], c[4]) for c in log.calls.values() if c[0] is torch.ops.aten.mm.default]
    assert (1, 420) in mms and sum(n for n, _ in mms) == 6  # 2 forward + 2 x 2 backward matmuls
    twice = KernelLog()
    with twice:
        fn()
        fn()
    assert twice.flops == 2 * log.flops and len(twice.calls) == len(log.calls)  # same shapes: grouped, counted
    assert kernel_bound(log, torch.device("cpu")) > 0


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

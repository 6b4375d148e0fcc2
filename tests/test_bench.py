"""`ponder bench` plumbing (not its speed): one config measured through the trainer's step, the --compare report."""

import json
import sys

import pytest
import torch

from ponder import UserError
from ponder.bench import KernelLog, bench_config, format_bench_compare, kernel_bound, run_bench


def test_bench_config_counts_flops_and_memory():
    r = bench_config("sudoku-extreme-trm-mlp", ["model.hidden=32", "model.n_heads=2", "model.n_supervision=2"], 4,
                     torch.float32, torch.device("cpu"), seconds=0.0)
    assert r["params"] > 0 and r["train_examples_per_s"] > 0 and r["eval_examples_per_s"] > 0
    # forward + backward FLOPs of one step: at least 3 x 2 x weights x tokens of the one recursion with gradient
    tokens = 4 * (81 + 16)
    assert r["step_gflop"] * 1e9 > 6 * 0.5 * r["params"] * tokens
    assert r["peak_mb"] is None or r["peak_mb"] > 0
    # the kernel bound: the counted FLOPs over the counted calls' own time (their sum is usually below the step's,
    # but that is a timing, which a loaded machine can invert: not asserted)
    assert r["kernel_s"] > 0 and r["kernel_bound_gflops"] == pytest.approx(r["step_gflop"] / r["kernel_s"])
    assert r["kernel_share"] == pytest.approx(r["kernel_s"] * r["train_gflops"] / r["step_gflop"])


TINY_TRM = ["model.hidden=16", "model.n_heads=2", "model.n_supervision=1", "model.n_cycles=1", "model.n_latent=1"]


def test_bench_config_times_a_compiled_step_against_the_eager_one():
    """--compile: ponder's step and the official structure both compiled, and the compiled step against the eager."""
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    r = bench_config("sudoku-extreme-trm-mlp", TINY_TRM, 2, torch.float32, torch.device("cpu"), seconds=0.0,
                     compile_backend="aot_eager")
    assert r["compiled_vs_eager"] > 0 and r["vs_official"] > 0
    # the official structure's own step really runs compiled (as its pretrain.py compiles the model)
    from ponder.config import resolve
    from ponder.official_step import official_step

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    cfg = resolve("sudoku-extreme-trm-mlp", TINY_TRM)
    x = torch.randint(1, 11, (2, 81), generator=torch.Generator().manual_seed(1))
    official_step(cfg, 11, 81, x, x, compile_backend="aot_eager")()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    plain = bench_config("sudoku-extreme-trm-mlp", TINY_TRM, 2, torch.float32, torch.device("cpu"), seconds=0.0,
                         vs_official=False)
    assert "compiled_vs_eager" not in plain


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
    text = format_bench_compare(new, old, "old.json")
    assert "train x1.50" in text and "eval x0.50" in text and "60.0% -> 90.0%" in text
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"nothing": 1}))
    with pytest.raises(UserError, match="not a bench JSON"):
        run_bench(tmp_path / "out.json", compare=str(bad))
    with pytest.raises(UserError, match="unknown family"):
        run_bench(tmp_path / "out.json", families="trm-mlp,nope")
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("mixer", ["mlp", "attention"])
def test_official_step_structure_computes_what_ponder_does(mixer):
    """The baseline `ponder bench` times ponder's step against must do the same work: with ponder's weights copied
    in, the re-typed official structure gives ponder's logits and halting logits bit for bit (float32)."""
    from ponder.config import resolve
    from ponder.models import build_model
    from ponder.official_step import OfficialTRM, official_step

    cfg = resolve("sudoku-extreme-trm-att", ["model.hidden=32", "model.n_heads=2", f"model.mixer={mixer}",
                                             f"model.pos_encoding={'none' if mixer == 'mlp' else 'rope'}"])
    torch.manual_seed(0)
    ours = build_model(cfg.model, 11, 81, 1).eval()
    theirs = OfficialTRM(cfg, 11, 81).eval()
    names = {"embed_tokens.weight": "embed_tokens", "y_init": "H_init", "z_init": "L_init"}
    state = {}
    for k, v in ours.state_dict().items():
        if k.startswith("puzzle_emb"):
            continue
        k = names.get(k, k).replace("blocks.", "L_level.layers.").replace(".gate_up.", ".gate_up_proj.")
        k = k.replace(".down.", ".down_proj.").replace("attn.qkv", "self_attn.qkv_proj").replace("attn.o", "self_attn.o_proj")
        state[k] = v
    theirs.load_state_dict(state)
    x = torch.randint(1, 11, (3, 81), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = ours(ours.initial_state(3, "cpu"), x, torch.zeros(3, dtype=torch.long))
        carry = theirs.initial_carry({"inputs": x, "labels": x})
        z_h, z_l, logits, q_halt = theirs.inner(theirs.H_init.expand_as(carry["z_H"]), theirs.L_init.expand_as(carry["z_L"]), x)
    assert torch.equal(out.logits, logits) and torch.equal(out.q_halt, q_halt)
    step = official_step(cfg, 11, 81, x, x)
    step()
    step()  # trains: carries, loss, backward, AdamW, EMA, the metrics copy


def test_gpu_check_script_refuses_without_cuda(tmp_path):
    import subprocess
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: bench/gpu_check.sh would run for real")
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "PY": sys.executable})
    assert done.returncode == 2 and "CUDA is not available" in done.stderr

"""Training: the loss falls, resume is bit-identical, Ctrl-C and NaN leave good checkpoints."""

import json
import os
import signal

import pytest
import torch
from helpers import tiny, weights

from ponder import checkpoint
from ponder.run import TrainingDiverged
from ponder.trainer import train


def test_resume_is_bit_identical(tmp_path, data_dir):
    cfg = tiny(data_dir, "train.steps=8", "train.lr_min_ratio=0.1")  # cosine decay: the schedule must resume too
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, until=4)
    assert checkpoint.list_checkpoints(tmp_path / "b")[-1].name == "step_00000004"
    train(cfg, tmp_path / "b", resume=True, progress=False)
    (wa, ea), (wb, eb) = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert wa.keys() == wb.keys() and "puzzle_emb.weight" in wa
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
        assert torch.equal(ea[k], eb[k]), k
    sa = checkpoint.load_state(checkpoint.list_checkpoints(tmp_path / "a")[-1])
    sb = checkpoint.load_state(checkpoint.list_checkpoints(tmp_path / "b")[-1])
    for k in sa["carry"]:
        assert torch.equal(sa["carry"][k], sb["carry"][k]), k
    assert sa["sampler"] == sb["sampler"]


def test_loss_falls_and_artifacts(tmp_path, data_dir):
    # 240 steps: seeds 0-2 end at 72-89% cell accuracy from ~27% (120 steps gave +9..+33 points: too noisy to test)
    run = train(tiny(data_dir, "train.steps=240", "train.log_every=20"), tmp_path / "r", progress=False)
    logs = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["lm_loss"] < 0.85 * logs[0]["lm_loss"], (logs[0], logs[-1])
    assert logs[-1]["cell"] > logs[0]["cell"] + 0.3  # beyond copying the givens (~47% of the cells)
    ck = run.checkpoint
    for name in ("model.safetensors", "ema.safetensors", "state.pt", "config.yaml", "meta.json"):
        assert (ck / name).exists()
    # the run's config, with the precision train.dtype=auto picked recorded (the suite pins float32)
    assert checkpoint.load_config(ck) == tiny(data_dir, "train.steps=240", "train.log_every=20", "train.dtype=float32")
    assert (tmp_path / "r" / "config.yaml").exists() and any((tmp_path / "r" / "tb").iterdir())
    # EMA weights differ from the raw ones, and evaluation loads the EMA ones
    raw, ema = weights(tmp_path / "r")
    assert not torch.equal(raw["lm_head.weight"], ema["lm_head.weight"])


def test_sigint_saves_a_consistent_checkpoint(tmp_path, data_dir, monkeypatch):
    import ponder.trainer as T

    real = T.act_step
    calls = {"n": 0}

    def act_step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during step 3
        return real(*a, **k)

    monkeypatch.setattr(T, "act_step", act_step)
    with pytest.raises(KeyboardInterrupt, match="interrupted: checkpoint .*step_00000003 saved"):
        train(tiny(data_dir, "train.steps=50"), tmp_path / "r", progress=False)
    assert checkpoint.list_checkpoints(tmp_path / "r")[-1].name == "step_00000003"
    # and the run resumes from there to the same weights as an uninterrupted run
    monkeypatch.setattr(T, "act_step", real)
    train(tiny(data_dir, "train.steps=6"), tmp_path / "r", resume=True, progress=False)
    train(tiny(data_dir, "train.steps=6"), tmp_path / "s", progress=False)
    (wa, _), (wb, _) = weights(tmp_path / "r"), weights(tmp_path / "s")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_second_ctrl_c_before_any_checkpoint_says_so(tmp_path, data_dir, monkeypatch):
    import ponder.trainer as T

    real = T.act_step
    calls = {"n": 0}

    def act_step(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C twice in a row: the second one interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*a, **k)

    monkeypatch.setattr(T, "act_step", act_step)
    with pytest.raises(KeyboardInterrupt, match="before a checkpoint; no checkpoint was saved yet"):
        train(tiny(data_dir, "train.steps=50", "train.checkpoint_every=0"), tmp_path / "r", progress=False)
    assert not checkpoint.list_checkpoints(tmp_path / "r")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, data_dir, monkeypatch):
    import ponder.trainer as T

    real = T.act_loss
    calls = {"n": 0}

    def act_loss(*a, **k):
        calls["n"] += 1
        out = real(*a, **k)
        if calls["n"] == 5:
            out.total = out.total * float("nan")
        return out

    monkeypatch.setattr(T, "act_loss", act_loss)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 5.*the newest checkpoint is .*step_00000004"):
        train(tiny(data_dir, "train.steps=50", "train.checkpoint_every=2"), tmp_path / "r", progress=False)
    found = checkpoint.list_checkpoints(tmp_path / "r")
    assert found[-1].name == "step_00000004"
    w, _ = weights(tmp_path / "r")
    assert all(torch.isfinite(v).all() for v in w.values())
    calls["n"] = 0  # diverging before any checkpoint: the message claims none
    with pytest.raises(TrainingDiverged, match="at step 5; .*; no checkpoint was saved yet"):
        train(tiny(data_dir, "train.steps=50", "train.checkpoint_every=0"), tmp_path / "n", progress=False)
    assert not checkpoint.list_checkpoints(tmp_path / "n")


def _compiled_equals_eager(tmp_path, data_dir, backend, steps=3):
    eager = tiny(data_dir, f"train.steps={steps}")
    train(eager, tmp_path / "eager", progress=False)
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    train(tiny(data_dir, f"train.steps={steps}", f"train.compile={backend}"), tmp_path / "compiled", progress=False)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the step really was compiled
    (we, _), (wc, _) = weights(tmp_path / "eager"), weights(tmp_path / "compiled")
    if backend == "aot_eager":  # the same kernels as eager
        for k in we:
            torch.testing.assert_close(wc[k], we[k], atol=1e-5, rtol=1e-4, msg=k)
        return
    # Fused kernels round differently (gradients agree to ~2e-6 relative), and Adam-atan2's first update is
    # lr x sign(g) for every element whatever |g|: a weight whose gradient is at rounding level moves by lr one way
    # or the other. So after one step every weight agrees but a handful, which differ by a flipped sign (2 lr at most;
    # measured: 1 of 83k, the rest within 7.5e-9). Over more steps such flips spread through the halting decisions.
    lr = tiny(data_dir).train.lr / tiny(data_dir).train.lr_warmup_steps  # the first step's lr (warm-up)
    off, total = 0, 0
    for k in we:
        d = (wc[k] - we[k]).abs()
        off += int((d > 1e-5 + 1e-4 * we[k].abs()).sum())
        total += d.numel()
        assert float(d.max()) <= 2 * lr * 1.01, k
    assert off <= total // 10000, f"{off} of {total} weights differ"


def test_compiled_step_equals_eager(tmp_path, data_dir):
    """train.compile traces the step with TorchDynamo/AOTAutograd (aot_eager: no C compiler, seconds)."""
    _compiled_equals_eager(tmp_path, data_dir, "aot_eager")


@pytest.mark.slow
def test_inductor_step_equals_eager(tmp_path, data_dir):
    """The fused-kernel backend users get with train.compile=inductor (~2 min of compilation on 2 CPU cores)."""
    _compiled_equals_eager(tmp_path, data_dir, "inductor", steps=1)


def test_unknown_compile_backend_is_a_user_error(tmp_path, data_dir):
    from ponder import UserError

    with pytest.raises(UserError, match="train.compile"):
        train(tiny(data_dir, "train.compile=nonsense"), tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


_FAULTS = """
import resource, sys, torch
from ponder.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
for _ in range(10):  # warm-up: the heap grows until freed blocks fit the next request (how many blocks that takes
    torch.ones(1 << 24)  # depends on what the imports left in the heap); 64 MB: above glibc's largest mmap threshold
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.ones(1 << 24)  # allocated, written, freed
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="glibc/Linux allocator behaviour")
def test_cpu_runs_reuse_freed_activation_memory(tmp_path):
    """keep_freed_memory (applied by resolve_device on CPU): a freed 64 MB activation is reused from the heap
    instead of being unmapped and page-faulted back at its next use; left alone under the user's MALLOC_* settings."""
    import subprocess
    import sys

    script = tmp_path / "faults.py"
    script.write_text(_FAULTS)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES") and
           not k.startswith("MALLOC_")}

    def run(mode, extra=None):
        out = subprocess.run([sys.executable, str(script), mode], env={**env, **(extra or {})}, capture_output=True,
                             text=True, check=True).stdout.split()
        return out[0] == "True", int(out[1])

    pages = (1 << 26) // os.sysconf("SC_PAGE_SIZE")
    applied, faults_default = run("default")
    assert not applied and faults_default > 19 * pages  # glibc: a fresh mmap, faulted in, at every allocation
    applied, faults_tuned = run("tuned")
    if not applied:
        pytest.skip("not glibc")
    assert faults_tuned <= 2 * pages  # once settled, the heap serves every block again
    assert run("tuned", {"MALLOC_ARENA_MAX": "2", "MALLOC_TRIM_THRESHOLD_": "0"})[0] is False


def test_puzzle_table_follows_the_warm_up(tmp_path, data_dir):
    """The sign-SGD puzzle table is scheduled like the weights: at step 1 of a 10-step warm-up its rows move by
    puzzle_emb_lr / 10 (sign of the gradient, zero initial rows so no decay), not by the full rate."""
    cfg = tiny(data_dir, "train.steps=1", "train.lr_warmup_steps=10", "train.puzzle_emb_lr=1e-2", "train.ema=false")
    train(cfg, tmp_path / "r", progress=False)
    table = checkpoint.load_weights(checkpoint.find(tmp_path / "r"), ema=False)["puzzle_emb.weight"]
    moved = table[table.abs().sum(1) > 0]
    assert len(moved) > 0 and torch.allclose(moved.abs(), torch.full_like(moved, 1e-3))


def test_urm_counter_makes_the_first_update_at_lr_zero(tmp_path, data_dir):
    """train.lr_counter=after (official URM): the n-th update uses lr(n-1), so under warm-up the first one has lr 0
    and leaves the weights as they were (weight decay is lr * wd: nothing either); "before" moves them."""
    init = None
    for counter in ("after", "before"):
        cfg = tiny(data_dir, "train.steps=1", "train.lr_warmup_steps=4", f"train.lr_counter={counter}",
                   "train.ema=false", "model.puzzle_emb=false", "model.puzzle_emb_len=1")
        torch.manual_seed(cfg.train.seed)
        from ponder.models import build_model

        init = init or build_model(cfg.model, 6, 16).state_dict()
        train(cfg, tmp_path / counter, progress=False)
        after = checkpoint.load_weights(checkpoint.find(tmp_path / counter), ema=False)
        unchanged = all(torch.equal(after[k], v) for k, v in init.items())
        assert unchanged == (counter == "after"), counter


def test_clipping_is_by_global_norm():
    """train.grad_clip scales all gradients together to that global norm (3-4-5: to 0.6, 0.8), not clipped per
    value (which would give 1, 1)."""
    from types import SimpleNamespace

    from ponder.config import TrainConfig
    from ponder.trainer import update

    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([p], lr=1.0)
    loss = SimpleNamespace(total=(p * torch.tensor([3.0, 4.0])).sum() * 8)
    update(loss, 8, [p], TrainConfig(grad_clip=1.0), opt, None, None)
    assert torch.allclose(p.detach(), torch.tensor([-0.6, -0.8]))


def test_resume_restores_the_exploration_draws(tmp_path, data_dir, monkeypatch):
    """The halting-exploration generator continues where it was: the draws a resumed run makes are those of the
    uninterrupted run (recorded at every supervision step)."""
    import ponder.trainer as trainer

    seen: dict[str, list] = {"straight": [], "resumed": []}
    real = trainer.supervision_step

    def record(step_model, model, carry, cfg, device, gen, shard=(0, 1)):
        seen[key].append(gen.get_state().clone())
        return real(step_model, model, carry, cfg, device, gen, shard)

    monkeypatch.setattr(trainer, "supervision_step", record)
    cfg = tiny(data_dir, "train.steps=4", "model.halt_exploration_prob=1.0")
    key = "straight"
    train(cfg, tmp_path / "a", progress=False)
    key = "resumed"
    train(cfg, tmp_path / "b", progress=False, until=2)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    assert len(seen["straight"]) == len(seen["resumed"]) == 4
    assert all(torch.equal(a, b) for a, b in zip(seen["straight"], seen["resumed"]))
    assert not torch.equal(seen["straight"][1], seen["straight"][2])  # the generator does advance

"""train.dtype=auto: which precision a device gets, that a run records it, and that bf16 runs resume bit for bit."""

import pytest
import torch
import yaml

from ponder import UserError, checkpoint, runtime
from ponder.config import resolve
from ponder.evaluate import load_model
from ponder.run import config_from_checkpoint
from ponder.tasks import build_dataset
from ponder.trainer import train

CPU = torch.device("cpu")
TINY = ["model.hidden=32", "model.n_heads=2", "model.n_latent=2", "model.n_cycles=2", "model.n_supervision=4",
        "data.sudoku.size=4", "data.sudoku.train_size=64", "data.sudoku.test_size=16", "data.sudoku.num_aug=1",
        "train.batch_size=16", "train.lr=3e-3", "train.lr_warmup_steps=2", "train.log_every=2",
        "train.checkpoint_every=0", "train.max_minutes=0", "train.augment=true", "eval.max_steps=6"]


@pytest.fixture
def measured(monkeypatch):
    """auto decided by the device instead of the suite's PONDER_AUTO_DTYPE pin; the per-process cache cleared."""
    monkeypatch.delenv(runtime.AUTO_ENV, raising=False)
    runtime._auto_dtype.cache_clear()
    yield monkeypatch
    runtime._auto_dtype.cache_clear()


def fake_cpu(monkeypatch, units, bf16_gflops, machine="x86_64"):
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: units)
    monkeypatch.setattr(runtime.platform, "machine", lambda: machine)
    probes = []

    def rate(dtype, device, **kw):
        probes.append(dtype)
        return bf16_gflops if dtype == torch.bfloat16 else 100.0

    monkeypatch.setattr(runtime, "matmul_rate", rate)
    return probes


def test_auto_picks_bf16_where_the_cpu_multiplies_it_fast(measured):
    probes = fake_cpu(measured, "AMX", bf16_gflops=500.0)
    name, why = runtime.resolve_dtype("auto", CPU)
    assert name == "bfloat16" and "AMX" in why and "5.0x" in why
    assert probes == [torch.bfloat16, torch.float32]


def test_auto_keeps_float32_when_bf16_units_are_slow_or_missing(measured):
    fake_cpu(measured, "AVX512-BF16", bf16_gflops=120.0)  # flags present, but only 1.2x: not worth the rounding
    assert runtime.resolve_dtype("auto", CPU)[0] == "float32"
    runtime._auto_dtype.cache_clear()
    probes = fake_cpu(measured, "", bf16_gflops=500.0)  # an x86 CPU whose flags name no bf16 unit: not even probed
    name, why = runtime.resolve_dtype("auto", CPU)
    assert name == "float32" and "no bf16 matrix units" in why and probes == []
    runtime._auto_dtype.cache_clear()
    probes = fake_cpu(measured, None, bf16_gflops=300.0, machine="arm64")  # no /proc/cpuinfo (macOS): measured
    assert runtime.resolve_dtype("auto", CPU)[0] == "bfloat16" and len(probes) == 2


def test_explicit_settings_and_the_environment_pin(measured):
    fake_cpu(measured, "AMX", bf16_gflops=500.0)
    assert runtime.resolve_dtype("float32", CPU)[0] == "float32"  # an explicit setting is never second-guessed
    measured.setenv(runtime.AUTO_ENV, "float32")
    assert runtime.resolve_dtype("auto", CPU) == ("float32", f"auto: {runtime.AUTO_ENV}")
    measured.setenv(runtime.AUTO_ENV, "half")
    with pytest.raises(UserError, match=runtime.AUTO_ENV):
        runtime.resolve_dtype("auto", CPU)
    with pytest.raises(UserError, match="train.dtype must be auto, float32 or bfloat16"):
        resolve("demo", ["train.dtype=float16"])
    assert resolve("demo").train.dtype == "auto"


def test_a_run_records_what_auto_picked_and_resumes_bit_identically_in_bf16(tmp_path, monkeypatch, capsys):
    cfg = resolve("demo", TINY)
    data = build_dataset(cfg.data, tmp_path / "data")
    cfg = resolve("demo", TINY + [f"data.path={data}", "train.steps=6"])
    monkeypatch.setenv(runtime.AUTO_ENV, "bfloat16")  # as on a CPU with AMX
    train(cfg, tmp_path / "a", progress=False)
    assert "dtype: bfloat16 (auto: PONDER_AUTO_DTYPE)" in capsys.readouterr().out
    recorded = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["train"]["dtype"]
    assert recorded == "bfloat16" and checkpoint.load_config(checkpoint.find(tmp_path / "a")).train.dtype == "bfloat16"
    train(cfg, tmp_path / "b", progress=False, until=3)
    monkeypatch.setenv(runtime.AUTO_ENV, "float32")  # resumed on a machine where auto would pick float32
    resumed = config_from_checkpoint(tmp_path / "b")[1]  # what `ponder train --resume` trains with
    assert resumed.train.dtype == "bfloat16"  # the run keeps the precision it started in
    train(cfg, tmp_path / "b", resume=True, progress=False)  # also when handed auto again (ponder compare does)
    a = checkpoint.load_weights(checkpoint.find(tmp_path / "a"), ema=False)
    b = checkpoint.load_weights(checkpoint.find(tmp_path / "b"), ema=False)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # bf16 changed the numbers: the same run in float32 ends elsewhere
    monkeypatch.setenv(runtime.AUTO_ENV, "float32")
    train(cfg, tmp_path / "f", progress=False)
    f = checkpoint.load_weights(checkpoint.find(tmp_path / "f"), ema=False)
    assert not torch.equal(a["lm_head.weight"], f["lm_head.weight"])
    # evaluation picks for its own machine unless told: auto here is float32, train.dtype=bfloat16 forces bf16
    assert load_model(tmp_path / "a")[1].train.dtype == "float32"
    assert load_model(tmp_path / "a", ["train.dtype=bfloat16"])[1].train.dtype == "bfloat16"

"""The CUDA paths: auto precision, bf16 autocast, SDPA, torch.compile (inductor and CUDA graphs), resume, DDP with
NCCL and `ponder bench --device cuda`. Marked `cuda`; each skips without a GPU (two GPUs for NCCL), so on a CPU
machine they cost nothing. `bench/gpu_check.sh` runs them on a GPU machine (`pytest -m cuda`)."""

import json
import subprocess
import sys

import pytest
import torch

from ponder import checkpoint, runtime
from ponder.config import resolve
from ponder.models import build_model
from ponder.tasks import build_dataset
from ponder.trainer import train

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
GPU = torch.device("cuda")
TINY = ["model.hidden=64", "model.n_heads=2", "model.n_latent=2", "model.n_cycles=2", "model.n_supervision=4",
        "data.sudoku.size=4", "data.sudoku.train_size=64", "data.sudoku.test_size=16", "data.sudoku.num_aug=1",
        "train.batch_size=16", "train.lr=3e-3", "train.lr_warmup_steps=2", "train.log_every=2",
        "train.checkpoint_every=0", "train.max_minutes=0", "train.augment=true", "eval.max_steps=6",
        "train.device=cuda"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return build_dataset(resolve("demo", TINY).data, tmp_path_factory.mktemp("data"))


def test_auto_picks_bf16_on_a_gpu_with_bf16(monkeypatch):
    monkeypatch.delenv(runtime.AUTO_ENV, raising=False)
    runtime._auto_dtype.cache_clear()
    name, why = runtime.resolve_dtype("auto", GPU)
    runtime._auto_dtype.cache_clear()
    assert name == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32"), why


@pytest.mark.parametrize("mixer", ["attention", "mlp"])
def test_gpu_forward_matches_the_cpu(mixer):
    """float32 on the GPU (SDPA's CUDA kernels for attention) against the CPU; bf16 autocast close to both."""
    cfg = resolve("sudoku-extreme-trm-att", ["model.hidden=64", "model.n_heads=2", f"model.mixer={mixer}"])
    torch.manual_seed(0)
    model = build_model(cfg.model, 11, 81, 1).eval()
    x = torch.randint(1, 11, (8, 81))
    ids = torch.zeros(8, dtype=torch.long)
    with torch.no_grad():
        cpu = model(model.initial_state(8, "cpu"), x, ids).logits
        model.cuda()
        gpu = model(model.initial_state(8, GPU), x.cuda(), ids.cuda()).logits.cpu()
        with runtime.autocast("bfloat16", GPU):
            half = model(model.initial_state(8, GPU), x.cuda(), ids.cuda()).logits.float().cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
    assert (half - cpu).abs().max() < 0.1 * cpu.abs().max()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gpu_training_learns_and_resumes_bit_identically(tmp_path, data_dir, dtype):
    cfg = resolve("demo", TINY + [f"data.path={data_dir}", "train.steps=8", f"train.dtype={dtype}"])
    train(cfg, tmp_path / "a", progress=False)
    train(cfg, tmp_path / "b", progress=False, until=4)
    train(cfg, tmp_path / "b", resume=True, progress=False)
    a = checkpoint.load_weights(checkpoint.find(tmp_path / "a"), ema=False)
    b = checkpoint.load_weights(checkpoint.find(tmp_path / "b"), ema=False)
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])]
    assert checkpoint.load_config(checkpoint.find(tmp_path / "a")).train.dtype == dtype


@pytest.mark.parametrize("backend", ["inductor", "cudagraphs"])
def test_compiled_gpu_step_matches_eager(tmp_path, data_dir, backend):
    base = TINY + [f"data.path={data_dir}", "train.steps=3", "train.dtype=float32", "train.ema=false"]
    train(resolve("demo", base), tmp_path / "eager", progress=False)
    train(resolve("demo", base + [f"train.compile={backend}"]), tmp_path / "compiled", progress=False)
    a = checkpoint.load_weights(checkpoint.find(tmp_path / "eager"), ema=False)
    b = checkpoint.load_weights(checkpoint.find(tmp_path / "compiled"), ema=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-3, msg=k)


@pytest.mark.skipif(torch.cuda.device_count() < 2 or not torch.distributed.is_nccl_available(),
                    reason="DDP with NCCL needs two GPUs")
def test_two_gpus_with_nccl_equal_one(tmp_path):
    common = ["train.batch_size=8", "train.log_every=1", "data.sudoku.train_size=300", "data.sudoku.test_size=20",
              "model.n_supervision=3", "train.lr_warmup_steps=0", "train.checkpoint_every=0", "train.max_minutes=0",
              "train.device=cuda", "train.dtype=float32", "train.steps=5"]
    for out, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run([sys.executable, "-m", "ponder", "train", "demo", *extra, "--out", out, *common],
                              cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    a = checkpoint.load_weights(checkpoint.find(tmp_path / "one"), ema=False)
    b = checkpoint.load_weights(checkpoint.find(tmp_path / "two"), ema=False)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=0, msg=k)


def test_bench_on_the_gpu(tmp_path):
    done = subprocess.run([sys.executable, "-m", "ponder", "bench", "--device", "cuda", "--quick", "--families",
                           "trm-mlp", "--sizes", "small", "--out", str(tmp_path / "b.json")],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["machine"]["device"] != "cpu" and result["machine"]["auto_dtype"] in ("float32", "bfloat16")
    for run in result["runs"].values():
        for r in run.get("configs", {}).values():
            assert r["train_examples_per_s"] > 0 and r["vs_official"] > 0

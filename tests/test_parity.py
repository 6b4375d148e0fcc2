"""Parity with the official TRM, HRM and URM code, pinned by that code's own outputs (../shared/fixtures/official:
official-format checkpoints, a batch of four 9x9 Sudoku, what the official models computed on it in float32 on CPU,
and the adam-atan2 package's oracle). Skipped when the fixtures are absent (a clone without ../shared).

Measured with ponder at the commit of this test (2-core x86_64, torch 2.13 CPU): the seed draws the official weights
bit for bit; 16 evaluation steps: logits and halting logits bit-equal for all four; one training step: loss and
its parts, logits, halting, continue target bit-equal, parameter gradients within 4.2e-7 (relative to the tensor's
largest gradient: 5.4e-7; float32 summation order in the backward), puzzle-row gradients within 4.5e-8;
Adam-atan2 bit-equal to the package's oracle after 1, 10 and 100 steps. The tolerances below are those figures
rounded up to the next power of ten.

Bit-equality needs the fixtures' kernels: torch dispatches its CPU kernels by the CPU's vector width, and the fixtures
were computed where it picks AVX512 on an Intel CPU. On an AVX2-only CPU (measured: 2-core AMD EPYC, torch 2.13) the
same code differs in the last bit (on an AMD EPYC with AVX512 too, measured 2026-12-06: its initial weights by one ulp): 1.6% of the initial weights by one ulp (trunc_normal_'s erfinv), the first step's logits by
up to 2.4e-6 of their largest magnitude, gradients by up to 2.6e-6, Adam-atan2 by 1e-7 relative. Recursion then
amplifies the difference: after 16 evaluation steps TRM-Att and URM stay within 7e-5, HRM grows to 3e-3 and the
random-weight TRM-MLP, whose latent dynamics are chaotic (x4 a step), to 100%. So on other kernels the tests compare
within the tolerances below (each ~10x the measured figure) and the evaluation up to its second step; bit-equality and
all 16 steps are checked where the kernels match.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ponder.act import act_loss, act_step, continue_target, empty_carry, refill
from ponder.cli import main
from ponder.config import resolve
from ponder.models import build_model
from ponder.checkpoint import load_into
from ponder.official import ponder_name, read_official, to_ponder
from ponder.optim import AdamAtan2

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="../shared/fixtures/official is absent")
FAMILIES = {"trm_att": "trm", "trm_mlp": "trm", "hrm": "hrm", "urm": "urm"}  # fixture folder -> --family
PRESETS = {"trm_att": "sudoku-extreme-trm-att", "trm_mlp": "sudoku-extreme-trm-mlp", "hrm": "sudoku-extreme-hrm",
           "urm": "sudoku-extreme-urm"}


def _cpu_vendor() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("vendor_id")), "")


# the kernels the fixtures were computed with: AVX512 on an Intel CPU (an AMD EPYC with AVX512, torch 2.13, draws 1
# ulp off in trunc_normal_ too: its math library takes another path there)
EXACT = torch.backends.cpu.get_cpu_capability() == "AVX512" and _cpu_vendor() == "GenuineIntel"
GRAD_ATOL, PUZZLE_GRAD_ATOL = (1e-6, 1e-7) if EXACT else (3e-5, 6e-6)
REL = 3e-5  # off the fixtures' kernels: a forward tensor's difference, relative to its largest magnitude
EVAL_STEPS = 16 if EXACT else 2  # off them, recursion amplifies the last-bit difference (see above)


def same(actual: torch.Tensor, expected: torch.Tensor, msg=None, ulps: bool = False) -> None:
    """Bit-equal on the fixtures' kernels; elsewhere within REL of the expected tensor's largest magnitude (or, with
    `ulps`, within 1e-6 of each element: a few ulps, where only a vector kernel's rounding differs)."""
    if EXACT:
        assert torch.equal(actual, expected), msg
    elif ulps:
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=0, msg=msg)
    else:
        atol = REL * expected.abs().max().item()
        torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=0, msg=msg)


def load(name: str, what: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(FIXTURES / name / f"{what}.safetensors"))


def overrides(name: str) -> list[str]:
    return [f"{k}={v}" for k, v in json.loads((FIXTURES / name / "config.json").read_text())["ponder_overrides"].items()]


def official_model(name: str) -> torch.nn.Module:
    """ponder's model of the fixture's config (`ponder_overrides` over the defaults) with the official weights."""
    c = json.loads((FIXTURES / name / "config.json").read_text())
    cfg = resolve({}, overrides(name))
    model = build_model(cfg.model, c["vocab_size"], c["seq_len"], c["num_puzzle_identifiers"])
    load_into(model, to_ponder(read_official(FIXTURES / name / "official_checkpoint.pt"), FAMILIES[name]), name)
    return model


@pytest.mark.parametrize("name", FAMILIES)
def test_a_seed_draws_the_official_weights(name):
    """Built in the official order with the official initialisers, torch.manual_seed(0) gives the official code's
    weights. The fixture replaced the Q head and the puzzle table after init (so that halting and the puzzle vector
    matter); URM's conv is stored in bf16 officially."""
    c = json.loads((FIXTURES / name / "config.json").read_text())
    torch.manual_seed(0)
    ours = build_model(resolve({}, overrides(name)).model, c["vocab_size"], c["seq_len"],
                       c["num_puzzle_identifiers"]).state_dict()
    official = to_ponder(read_official(FIXTURES / name / "official_checkpoint.pt"), FAMILIES[name])
    assert set(official) == set(ours)
    for key, value in official.items():
        if key.startswith(("q_head.", "puzzle_emb.")):
            continue
        mine = ours[key].to(torch.bfloat16).float() if ".conv." in key else ours[key]
        same(mine, value, key, ulps=True)  # off the fixtures' kernels: erfinv's vector form, one ulp


@pytest.mark.parametrize("name", FAMILIES)
def test_sixteen_evaluation_steps_are_bit_equal(name):
    model = official_model(name).eval()
    batch, expected = load(name, "batch"), load(name, "expected_eval")
    state = model.initial_state(4, "cpu")
    with torch.inference_mode():
        for s in range(EVAL_STEPS):
            out = model(state, batch["inputs"].long(), batch["puzzle_identifiers"].long())
            state = out.state
            same(out.logits, expected["logits"][s], (name, s))
            same(out.q_halt, expected["q_halt_logits"][s], (name, s))
            if name == "hrm":  # the only family that uses its continue logit
                same(out.q_continue, expected["q_continue_logits"][s], s)
            else:
                assert out.q_continue is None


@pytest.mark.parametrize("name", FAMILIES)
def test_one_training_step(name):
    """ponder's ACT loop on the batch (refill, one supervision step without exploration, HRM's continue target, the
    stablemax ACT loss), then backward of the summed loss, as the fixture ran the official loss head."""
    model = official_model(name).train()
    batch, expected = load(name, "batch"), load(name, "expected_train")
    carry = refill(model, empty_carry(model, 4, 81, "cpu"), batch["inputs"].long(), batch["labels"].long(),
                   batch["puzzle_identifiers"].long())
    out, carry = act_step(model, carry, 16, 0.0, 2, torch.Generator().manual_seed(0))
    target = continue_target(model, carry, 16) if name == "hrm" else None
    loss = act_loss(out, carry.labels, "stablemax", 0.5, target)
    loss.total.backward()
    same(loss.total.detach(), expected["loss"])
    same(loss.lm.detach(), expected["lm_loss"])
    same(loss.halt.detach(), expected["q_halt_loss"])
    same(out.logits, expected["logits"])
    same(out.q_halt, expected["q_halt_logits"])
    assert torch.equal(carry.halted.to(torch.uint8), expected["halted"])
    assert torch.equal(carry.steps, expected["steps"])
    if name == "hrm":
        same(target, expected["target_q_continue"])
        same(out.q_continue, expected["q_continue_logits"])
        continue_loss = torch.nn.functional.binary_cross_entropy_with_logits(out.q_continue, target, reduction="sum")
        same(continue_loss.detach(), expected["q_continue_loss"])  # what act_loss adds for HRM
    params = dict(model.named_parameters())
    grads = {ponder_name(k[len("grad."):], FAMILIES[name]): v for k, v in expected.items() if k.startswith("grad.")}
    assert set(grads) == set(params)  # every official parameter's gradient, and no other
    for key, g in grads.items():
        torch.testing.assert_close(params[key].grad, g, atol=GRAD_ATOL, rtol=0, msg=key)
    torch.testing.assert_close(model.puzzle_emb.local.grad, expected["puzzle_emb_local_grad"], atol=PUZZLE_GRAD_ATOL,
                               rtol=0)
    assert torch.equal(model.puzzle_emb.local_ids.int(), expected["puzzle_emb_local_ids"])


def test_adam_atan2_is_the_package_update():
    """The adam-atan2 0.0.3 oracle (= its CUDA kernel): lr / (1 - b1^t) * atan2(m, sqrt(v) / sqrt(1 - b2^t))."""
    from safetensors.torch import load_file

    e = load_file(str(FIXTURES / "adam_atan2" / "expected.safetensors"))
    settings = json.loads((FIXTURES / "adam_atan2" / "settings.json").read_text())
    for wd in settings["weight_decays"]:
        w, b = e["init.w"].clone().requires_grad_(), e["init.b"].clone().requires_grad_()
        opt = AdamAtan2([w, b], lr=settings["lr"], betas=tuple(settings["betas"]), weight_decay=wd)
        for t in range(1, 101):
            w.grad, b.grad = e["grads.w"][t - 1].clone(), e["grads.b"][t - 1].clone()
            opt.step()
            if t in settings["steps_saved"]:
                for name, p in (("w", w), ("b", b)):
                    key = f"wd{wd}.step{t}"
                    for mine, theirs in ((p.detach(), f"{key}.{name}"), (opt.state[p]["exp_avg"], f"{key}.exp_avg.{name}"),
                                         (opt.state[p]["exp_avg_sq"], f"{key}.exp_avg_sq.{name}")):
                        same(mine, e[theirs], theirs, ulps=True)  # off the kernels: atan2's vector form


# ---------------------------------------------------------------------------------------------------------------------
# ponder import: the CLI path a user takes


def batch_dataset(path: Path, name: str) -> Path:
    """The fixture's batch as a dataset directory (test split = the 4 puzzles, ids 1..4 of 5)."""
    from ponder.tasks.dataset import Metadata, PuzzleArrays, write_identifiers, write_split

    b = load(name, "batch")
    arrays = PuzzleArrays(b["inputs"].numpy().astype(np.uint8), b["labels"].numpy().astype(np.uint8),
                          b["puzzle_identifiers"].numpy(), np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int32))
    for split in ("train", "test"):
        write_split(path, split, arrays, Metadata(seq_len=81, vocab_size=11, num_puzzle_identifiers=5))
    write_identifiers(path, ["<blank>", "p1", "p2", "p3", "p4"])
    return path


@pytest.mark.parametrize("name", FAMILIES)
def test_import_then_eval_reproduces_the_official_logits(name, tmp_path, capsys):
    from safetensors.torch import load_file

    data = batch_dataset(tmp_path / "data", name)
    code = main(["import", str(FIXTURES / name / "official_checkpoint.pt"), "--family", FAMILIES[name], "--preset",
                 PRESETS[name], *overrides(name), "train.dtype=float32", "--out", str(tmp_path / "run"),
                 "--data", str(data)])
    assert code == 0, capsys.readouterr().err
    code = main(["eval", str(tmp_path / "run"), "--save-outputs", "4", "--pictures", "0",
                 f"eval.max_steps={EVAL_STEPS}"])
    assert code == 0, capsys.readouterr().err
    outputs = load_file(str(tmp_path / "run" / "eval" / "outputs.safetensors"))
    expected = load(name, "expected_eval")
    same(outputs["logits"], expected["logits"][:EVAL_STEPS])
    same(outputs["q_halt"], expected["q_halt_logits"][:EVAL_STEPS])
    assert torch.equal(outputs["puzzle_identifiers"], load(name, "batch")["puzzle_identifiers"])


def _official_file(tmp_path: Path, edit) -> Path:
    state = read_official(FIXTURES / "trm_att" / "official_checkpoint.pt")
    edit(state)
    path = tmp_path / "edited.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("_orig_mod.model.inner.lm_head.weight"), "no tensor for lm_head.weight"),
    (lambda s: s.update({"_orig_mod.model.inner.L_level.layers.2.mlp.down_proj.weight": torch.zeros(64, 256)}),
     "tensor blocks.2.mlp.down.weight has no place"),
    (lambda s: s.update({"_orig_mod.model.inner.extra_head.weight": torch.zeros(3)}),
     "official tensor _orig_mod.model.inner.extra_head.weight has no counterpart"),
    (lambda s: s.update({"_orig_mod.model.inner.lm_head.weight": torch.zeros(11, 32)}),
     r"tensor lm_head.weight is \(11, 32\) in the checkpoint but \(11, 64\)"),
])
def test_import_names_every_bad_tensor(tmp_path, capsys, edit, message):
    path = _official_file(tmp_path, edit)
    code = main(["import", str(path), "--family", "trm", "--preset", "sudoku-extreme-trm-att", *overrides("trm_att"),
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    import re

    assert re.search(message, err), err
    assert not (tmp_path / "run" / "ckpt").exists()


def test_import_refuses_code_and_mismatched_data(tmp_path, capsys):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    torch.save({"x": Payload()}, tmp_path / "evil.pt")
    args = ["--preset", "sudoku-extreme-trm-att", *overrides("trm_att")]
    assert main(["import", str(tmp_path / "evil.pt"), "--family", "trm", *args, "--out", str(tmp_path / "a")]) == 2
    assert "not a readable official checkpoint" in capsys.readouterr().err and not marker.exists()
    # the family must be the preset's
    assert main(["import", str(FIXTURES / "hrm" / "official_checkpoint.pt"), "--family", "hrm", *args,
                 "--out", str(tmp_path / "b")]) == 2
    assert "preset's model.family is trm" in capsys.readouterr().err
    # a dataset whose puzzle identifiers are not the checkpoint's table
    data = batch_dataset(tmp_path / "data", "trm_att")
    meta = json.loads((data / "test" / "dataset.json").read_text())
    (data / "test" / "dataset.json").write_text(json.dumps({**meta, "num_puzzle_identifiers": 7}))
    args = ["--family", "trm", *args]
    assert main(["import", str(FIXTURES / "trm_att" / "official_checkpoint.pt"), *args, "--data", str(data),
                 "--out", str(tmp_path / "c")]) == 2
    assert "7 puzzle identifiers, but the checkpoint's puzzle table has 5 rows" in capsys.readouterr().err


def test_imported_run_without_compile_prefix_evaluates_and_cannot_be_resumed(tmp_path, capsys):
    """A checkpoint saved without torch.compile (keys start with `model.`) imports too; an imported run holds
    weights only, so --resume says so instead of failing on a missing training state."""
    state = {k.removeprefix("_orig_mod."): v for k, v in
             read_official(FIXTURES / "trm_att" / "official_checkpoint.pt").items()}
    torch.save(state, tmp_path / "plain.pt")
    args = ["--family", "trm", "--preset", "sudoku-extreme-trm-att", *overrides("trm_att")]
    assert main(["import", str(tmp_path / "plain.pt"), *args, "--out", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "run"), "--pictures", "0"]) == 2  # no dataset recorded
    assert "pass --data DIR" in capsys.readouterr().err
    data = batch_dataset(tmp_path / "data", "trm_att")
    assert main(["eval", str(tmp_path / "run"), "--data", str(data), "--pictures", "0", "eval.max_steps=2",
                 "train.dtype=float32"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "run"), "train.device=cpu"]) == 2
    assert "holds weights only" in capsys.readouterr().err

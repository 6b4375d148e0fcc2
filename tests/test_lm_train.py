"""Retrofit training side: depth sampler and curriculum, GSM8K data and answer extraction, the Muon/AdamW split,
bit-identical resume, the R-sweep evaluation end to end, CLI errors. A tiny random Llama and a character-level
tokenizer stand in for real weights (no download)."""

import json
import math
import string

import pytest
import torch

from ponder import UserError, checkpoint
from ponder.cli import main
from ponder.config import parse_layers, preset_names, resolve
from ponder.lm.data import (IGNORE, IndexStream, collate, extract_answer, load_documents, load_gsm8k, pack_documents,
                            task_example)
from ponder.lm.schedule import OFFICIAL_SEED, curriculum_shape, mean_recurrence_at, sample_depth

# ---------------------------------------------------------------------------------------------------------------------
# fixtures: a character-level tokenizer, a tiny Llama saved as a local HF directory, tiny GSM8K files

PROBLEMS = [("What is 2 plus 3?", "2+3=<<2+3=5>>5\n#### 5"), ("What is 10 minus 4?", "10-4=<<10-4=6>>6\n#### 6"),
            ("Tom has 7 apples and eats 2. How many are left?", "7-2=<<7-2=5>>5 apples.\n#### 5"),
            ("What is 3 times 4?", "3*4=<<3*4=12>>12\n#### 12"), ("Half of 18?", "18/2=<<18/2=9>>9\n#### 9"),
            ("What is 1,000 plus 234?", "1,000+234=1,234\n#### 1,234")]


def char_tokenizer():
    pytest.importorskip("transformers")
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    chars = sorted(set(string.printable) - set("\x0b\x0c\r"))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                   unk_token="<unk>")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: a second thread only adds synchronisation (and stalls badly on a loaded 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer():
    return char_tokenizer()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, tokenizer):
    from ponder.lm.load import tiny_llama

    torch.manual_seed(0)
    model = tiny_llama(len(tokenizer), 32, 4, 2, 1)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def gsm_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("gsm8k")
    for split in ("train", "test"):
        (path / f"{split}.jsonl").write_text("".join(json.dumps({"question": q, "answer": a}) + "\n"
                                                     for q, a in PROBLEMS))
    (path / "heal.txt").write_text("The cat sat on the mat.\n\nA second document,\nwith two lines.\n\n\n" * 20)
    return path


def tiny_cfg(base_dir, gsm_dir, *extra):
    return resolve("lm-smollm2-cpu", [
        f"lm.base={base_dir}", "lm.prelude=0", "lm.core=1-2", "lm.coda=3", "lm.mean_recurrence=3",
        "lm.curriculum=linear", "lm.curriculum_fraction=0.5", "lm.seq_len=48", "lm.muon_lr=0.02", "lm.adam_lr=0.003",
        f"lm.task_data={gsm_dir / 'train.jsonl'}", f"lm.eval_data={gsm_dir / 'test.jsonl'}",
        f"lm.healing_data={gsm_dir / 'heal.txt'}", "lm.healing_steps=2", "lm.grad_accum=2",
        "lm.eval_recurrences=1,2", "lm.eval_examples=2", "lm.max_new_tokens=6", "train.batch_size=2",
        "train.steps=4", "train.lr_warmup_steps=2", "train.lr_min_ratio=0.1", "train.log_every=1",
        "train.checkpoint_every=0", "train.max_minutes=0", "train.threads=0", *extra])


# ---------------------------------------------------------------------------------------------------------------------
# schedule


@pytest.mark.parametrize("r_bar", [2, 4, 8])
def test_sampler_mean(r_bar):
    """Reference 2.3: mu = ln(r_bar) - sigma^2/2 makes E[tau] = r_bar; p = Poisson(tau) + 1, so E[p] = r_bar + 1."""
    draws = [sample_depth(r_bar, 8, step) for step in range(3000)]
    taus = torch.tensor([d.tau for d in draws])
    ps = torch.tensor([d.total for d in draws], dtype=torch.float64)
    var_p = r_bar + r_bar**2 * (math.exp(0.25) - 1)  # Var(Poisson(tau)) = E[tau] + Var(tau)
    assert abs(taus.mean().item() - r_bar) < 4 * r_bar * math.sqrt(math.exp(0.25) - 1) / math.sqrt(3000)
    assert abs(ps.mean().item() - (r_bar + 1)) < 4 * math.sqrt(var_p / 3000)
    b = min(8, r_bar)
    assert all(d.k == min(d.total, b) and d.n == d.total - d.k and d.total >= 1 for d in draws)
    assert sample_depth(r_bar, 8, 17) == sample_depth(r_bar, 8, 17)  # a pure function of (seed, step)
    assert sample_depth(r_bar, 8, 17) == sample_depth(r_bar, 8, 0, seed=OFFICIAL_SEED + 17)


def test_curriculum_values():
    # max 4, 100 steps, ramp over 50%: T_warm = 50; r_bar = max(1, ceil(4 f(t / 50))), 4 from step 50 on
    linear = {0: 1, 10: 1, 12: 1, 13: 2, 25: 2, 26: 3, 37: 3, 38: 4, 49: 4, 50: 4, 99: 4}
    for t, want in linear.items():  # 13: 4 * 0.26 = 1.04 -> 2;  26: 2.08 -> 3;  38: 3.04 -> 4
        assert mean_recurrence_at(t, 4, 100, 0.5, "linear") == want, t
    # 1-sqrt: f(0.2) = 0.106 -> 1;  f(0.5) = 0.293 -> 2;  f(0.8) = 0.553 -> 3;  f(0.96) = 0.8 -> 4
    sqrt = {0: 1, 10: 1, 25: 2, 40: 3, 48: 4, 50: 4}
    for t, want in sqrt.items():
        assert mean_recurrence_at(t, 4, 100, 0.5, "1-sqrt") == want, t
    assert curriculum_shape(0.75, "1-sqrt") == pytest.approx(0.5)
    assert [mean_recurrence_at(t, 32, 1000, 0.0, "linear") for t in (0, 999)] == [32, 32]  # no curriculum


# ---------------------------------------------------------------------------------------------------------------------
# data


@pytest.mark.parametrize("text,want", [
    ("so the total is 2+3=5\n#### 5", "5"), ("#### 1,234", "1234"), ("#### $1,234,567.00", "1234567"),
    ("#### -7", "-7"), ("#### 18.", "18"), ("#### 18.0", "18"), ("#### 18.50", "18.5"), ("#### 0.25", "0.25"),
    ("She pays $1,200 and then 300 more, so 1,500 dollars.", "1500"),  # no ####: the last number
    ("The temperature fell to -3 degrees.", "-3"), ("pages 3-4 then 12", "12"), ("from 3-4", "4"),
    ("first #### 3, later #### 4", "4"), ("#### no number here", None), ("no number at all", None), ("", None),
    ("The answer is 42.", "42"), ("It costs 3, 4, or 5 dollars", "5"), ("#### 5 apples and 6 pears", "5"),
    ("#### " + "9" * 5000, "9" * 5000), ("#### -0.0", "0"),  # found by fuzzing: int() refuses 4,300+ digits
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_gsm8k_loader(gsm_dir, tmp_path):
    problems = load_gsm8k(gsm_dir / "train.jsonl")
    assert [p.answer for p in problems] == ["5", "6", "5", "12", "9", "1234"]
    assert problems[0].solution == "2+3=5\n#### 5"  # calculator annotations removed
    assert len(load_gsm8k(gsm_dir / "train.jsonl", limit=2)) == 2
    good = json.dumps({"question": "q", "answer": "a\n#### 1"})
    cases = {"not valid JSON": "{oops", "field 'question' missing": json.dumps({"answer": "#### 1"}),
             "does not end in '#### N'": json.dumps({"question": "q", "answer": "1"}),
             "no number after '####'": json.dumps({"question": "q", "answer": "#### x"}),
             "expected a JSON object": "[1, 2]"}
    for needle, bad in cases.items():
        path = tmp_path / "bad.jsonl"
        path.write_text(good + "\n\n" + bad + "\n")
        with pytest.raises(UserError, match=f"bad.jsonl:3: .*{needle}"):
            load_gsm8k(path)
    with pytest.raises(UserError, match="no such file"):
        load_gsm8k(tmp_path / "missing.jsonl")


def test_packing(gsm_dir, tmp_path, tokenizer):
    docs = load_documents(gsm_dir / "heal.txt")
    assert docs[:2] == ["The cat sat on the mat.", "A second document,\nwith two lines."] and len(docs) == 40
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "abc"}) + "\n" + json.dumps({"text": "de"}) + "\n")
    rows = pack_documents(load_documents(tmp_path / "c.jsonl"), tokenizer, 3)
    eos = tokenizer.eos_token_id
    assert rows.shape == (2, 3)  # "abc<eos>de<eos>" = 7 tokens -> 2 rows of 3, the tail dropped
    assert rows.flatten().tolist() == tokenizer.encode("abc", add_special_tokens=False) + [eos] + \
        tokenizer.encode("de", add_special_tokens=False)
    with pytest.raises(UserError, match="fewer than one row"):
        pack_documents(["ab"], tokenizer, 16)
    with pytest.raises(UserError, match=r"c.jsonl:1: field 'text'"):
        (tmp_path / "c.jsonl").write_text(json.dumps({"txt": "abc"}) + "\n")
        load_documents(tmp_path / "c.jsonl")
    stream = IndexStream(5, seed=3)
    first = stream.take(7)
    state = stream.state_dict()
    rest = stream.take(6)
    stream2 = IndexStream(5, seed=3)
    stream2.load_state_dict(state)
    assert stream2.take(6) == rest and sorted(first[:5]) == [0, 1, 2, 3, 4]


def test_loss_only_on_answer_tokens(gsm_dir, tokenizer):
    from ponder.lm.train import lm_loss

    p = load_gsm8k(gsm_dir / "train.jsonl")[2]
    ex = task_example(tokenizer, p, seq_len=200)
    assert ex.input_ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ex.input_ids, skip_special_tokens=True) == f"Question: {p.question}\nAnswer: {p.solution}"
    answer = [t for t in ex.labels if t != IGNORE]
    assert tokenizer.decode(answer) == " " + p.solution + "<eos>"
    n_prompt = ex.labels.index(answer[0])
    assert all(t == IGNORE for t in ex.labels[:n_prompt])
    ids, labels = collate([ex, task_example(tokenizer, load_gsm8k(gsm_dir / "train.jsonl")[0], 200)], 0)
    assert labels[1, -1] == IGNORE and ids[1, -1] == 0  # right padding, no loss
    logits = torch.randn(*ids.shape, len(tokenizer), requires_grad=True)
    loss, count = lm_loss(logits, labels)
    assert count == len(answer) + sum(t != IGNORE for t in labels[1].tolist())
    loss.backward()
    graded = logits.grad.abs().sum(-1) > 0  # (B, T): positions whose prediction enters the loss
    assert torch.equal(graded[:, :-1], labels[:, 1:] != IGNORE) and not graded[:, -1].any()
    assert len(task_example(tokenizer, p, seq_len=20).input_ids) == 20  # truncated to seq_len


# ---------------------------------------------------------------------------------------------------------------------
# training


def test_one_step_changes_weights_and_the_optimiser_split(base_dir, gsm_dir, tmp_path):
    from ponder.lm.train import build_lm, train_lm
    from ponder.optim import split_hidden

    cfg = tiny_cfg(base_dir, gsm_dir, "train.steps=1", "lm.healing_steps=0")
    model, _ = build_lm(cfg.lm)
    muon, adam = split_hidden(model, (model.lm_head,))
    muon_names, adam_names = [n for n, _ in muon], [n for n, _ in adam]
    assert any("adapter" in n for n in muon_names), muon_names
    assert all(p.ndim == 2 for _, p in muon) and not any("embed" in n or "norm" in n or "lm_head" in n
                                                         for n in muon_names)
    assert any("embed" in n for n in adam_names) and any("norm" in n for n in adam_names)
    assert len(muon) + len(adam) == len([p for p in model.parameters() if p.requires_grad])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run = train_lm(cfg, tmp_path / "r", progress=False)
    after = checkpoint.load_weights(run.checkpoint, ema=False)
    changed = {k for k in before if k in after and not torch.equal(before[k], after[k])}
    assert any("adapter" in k for k in changed) and any("embed" in k for k in changed)
    log = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert log[0]["phase"] == "task" and log[0]["r_bar"] == 3 and log[0]["k"] >= 1 and math.isfinite(log[0]["loss"])


def test_resume_is_bit_identical(base_dir, gsm_dir, tmp_path):
    """4 steps straight == 2 steps + --resume + 2 steps: weights, optimiser state, data positions; the run crosses the
    healing -> task phase boundary at the resume point and uses cosine lr decay and gradient accumulation."""
    from ponder.lm.train import train_lm

    cfg = tiny_cfg(base_dir, gsm_dir)
    train_lm(cfg, tmp_path / "a", progress=False)
    train_lm(cfg, tmp_path / "b", progress=False, until=2)
    assert checkpoint.list_checkpoints(tmp_path / "b")[-1].name == "step_00000002"
    train_lm(cfg, tmp_path / "b", resume=True, progress=False)
    ca, cb = (checkpoint.list_checkpoints(tmp_path / d)[-1] for d in "ab")
    wa, wb = checkpoint.load_weights(ca, ema=False), checkpoint.load_weights(cb, ema=False)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = checkpoint.load_state(ca), checkpoint.load_state(cb)
    assert sa["data"] == sb["data"] and sa["step"] == sb["step"] == 4
    assert torch.equal(sa["generator"], sb["generator"])
    la = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["phase"] for r in la] == ["healing", "healing", "task", "task"]
    def key(r):
        return r["loss"], r["n"], r["k"], r["r_bar"]

    assert [key(r) for r in la] == [key(r) for r in lb]


def test_eval_sweep_end_to_end(base_dir, gsm_dir, tmp_path):
    from ponder.lm.evaluate import evaluate_lm_checkpoint, format_lm_table
    from ponder.lm.train import train_lm

    run = train_lm(tiny_cfg(base_dir, gsm_dir, "train.steps=1", "lm.healing_steps=0"), tmp_path / "r", progress=False)
    res, out = evaluate_lm_checkpoint(run.checkpoint, ["lm.eval_recurrences=1,2,4"], run.run_dir / "lm_eval",
                                      progress=False)
    assert res["recurrences"] == [1, 2, 4] and res["n"] == 2 and len(res["accuracy"]) == 3
    assert all(0 <= a <= 1 for a in res["accuracy"]) and all(math.isfinite(p) and p > 1 for p in res["perplexity"])
    assert all(0 < m <= r for m, r in zip(res["mean_loops"], res["recurrences"]))
    table = format_lm_table(res)
    assert "GSM8K acc" in table and len(table.splitlines()) == 3 + 3
    assert (out / "results.json").exists() and (out / "lm_scaling.png").stat().st_size > 1000
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 and {r["R"] for r in rows} == {1, 2, 4}
    # why each completion ended, and the raw tokens: an empty answer can be told from a cut one
    assert all(r["ended"] in ("eos", "stop", "length") and 1 <= r["new_tokens"] <= 256 for r in rows)
    assert all(r["raw"].startswith(r["completion"].rstrip()[:10]) for r in rows)
    from ponder.report import write_report

    page = write_report(run.run_dir).read_text()  # an LM run's page: its LM sections, the sweep over R
    assert "LM evaluation" in page and "retrofitted" in page and "GSM8K acc" in page
    assert "<td>task</td>" not in page and "mlp_norm_quirk" not in page.split("<details>")[0]


# ---------------------------------------------------------------------------------------------------------------------
# config and CLI


def test_lm_presets_parse():
    counts = {"lm-smollm2-cpu": 30, "lm-tinyllama-484": 22, "lm-llama32-1b-242": 16}
    assert set(counts) <= set(preset_names())
    shapes = {}
    for name, layers in counts.items():
        lc = resolve(name).lm
        idx = [parse_layers(getattr(lc, s)) for s in ("prelude", "core", "coda")]
        assert max(max(i) for i in idx) < layers and lc.muon_lr == 0.001 and lc.adam_lr == 5e-5
        shapes[name] = tuple(len(i) for i in idx)
    assert shapes["lm-tinyllama-484"] == (4, 8, 4) and shapes["lm-llama32-1b-242"] == (2, 4, 2)
    assert shapes["lm-smollm2-cpu"] == (10, 10, 10)  # every layer kept: R = 1 starts as the base model
    assert resolve("lm-tinyllama-484").lm.core == "10-17"


def test_cli_errors_exit_2(base_dir, gsm_dir, tmp_path, capsys):
    assert main(["lm", "train", "lm-smollm2-cpu", "lm.bogus=1", "--out", str(tmp_path / "a")]) == 2
    assert "unknown config key 'lm.bogus'" in capsys.readouterr().err
    assert main(["lm", "train", "lm-smollm2-cpu", "lm.core=4-x", "--out", str(tmp_path / "b")]) == 2
    assert "not a list of layer indices" in capsys.readouterr().err
    assert main(["lm", "train", "lm-smollm2-cpu", f"lm.base={base_dir}", "lm.core=1-9",
                 f"lm.task_data={gsm_dir / 'train.jsonl'}", "--out", str(tmp_path / "c")]) == 2
    assert "layer 4 does not exist" in capsys.readouterr().err
    assert main(["lm", "train", "lm-smollm2-cpu", f"lm.base={base_dir}", "lm.prelude=0", "lm.core=1-2", "lm.coda=3",
                 "lm.seq_len=8", f"lm.task_data={gsm_dir / 'train.jsonl'}", "--out", str(tmp_path / "d")]) == 2
    assert "shorter than every prompt" in capsys.readouterr().err
    assert main(["lm", "eval", str(tmp_path / "nothing")]) == 2


def test_eval_refuses_a_different_surgery(base_dir, gsm_dir, tmp_path, capsys):
    from ponder.lm.train import train_lm

    run = train_lm(tiny_cfg(base_dir, gsm_dir, "train.steps=1", "lm.healing_steps=0"), tmp_path / "r", progress=False)
    assert main(["lm", "eval", str(run.run_dir), "lm.core=1"]) == 2
    assert "lm.core define the checkpoint's weights" in capsys.readouterr().err


def test_info_counts_the_retrofitted_weights_without_loading_them(base_dir, gsm_dir, capsys):
    """`ponder info` counts the retrofit from the base's config on the meta device; the count is the one of the model
    training builds (kept layers + untied head + the 2h x h adapter)."""
    from ponder.lm.train import build_lm

    cfg = tiny_cfg(base_dir, gsm_dir)
    model, _ = build_lm(cfg.lm)
    n = sum(p.numel() for p in model.parameters())
    overrides = [f"lm.base={base_dir}", "lm.prelude=0", "lm.core=1-2", "lm.coda=3"]
    assert main(["info", "lm-smollm2-cpu", *overrides]) == 0
    out = capsys.readouterr().out
    assert f": {n:,} weights (base " in out
    assert main(["info", "lm-smollm2-cpu", "lm.base=/no/such/model"]) == 0  # the config is still shown
    assert "weights counted once the base model is found (base model not found: /no/such/model" in \
        capsys.readouterr().out

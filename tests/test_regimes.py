"""The 1dCA study's regimes: the chain-of-thought and O-O layouts, greedy generation (KV cache = recomputation,
never reading the target states), GRPO's reward, advantages and clipped objective against hand computations, GRPO
from the CLI with exact resume, and `ponder study` (one dataset per layout of the same orbits, resume, refusal of a
changed member)."""

import json
import math

import numpy as np
import pytest
import torch

from ponder.cli import main
from ponder.config import Ca1dConfig, ModelConfig, resolve
from ponder.evaluate import evaluate_model
from ponder.grpo import clipped_objective, completion_mask, group_advantages
from ponder.models import build_model
from ponder.tasks.ca1d import CELL0, CELL1, GEN, MASK, PAD, SEP, Ca1dTask
from ponder.tasks.dataset import PuzzleArrays

TINY = dict(family="neox", hidden=32, n_layers=2, n_heads=2, n_supervision=1, puzzle_emb=False, puzzle_emb_len=0)


def _task(layout: str, **kw) -> Ca1dTask:
    return Ca1dTask(Ca1dConfig(**{**dict(radius=1, width=6, context=3, k=0, max_k=3, layout=layout, train_size=16,
                                         test_size=16, train_rules=8, test_rules=8), **kw}))


# ---------------------------------------------------------------------------------------------------------------------
# chain of thought and its baseline


def test_cot_layout_writes_the_true_future_states_and_labels_them():
    cot, causal = _task("cot"), _task("causal")
    a, b = cot.build("test", 0), causal.build("test", 0)
    w, c = 6, 3
    assert cot.seq_len == c * (w + 1) + 1 + 3 * (w + 1)  # SEP s0 .. SEP s2 GEN (SEP s_j) x 3
    given = np.asarray(a.inputs)[:, cot.state_pos] - CELL0  # (B, c, W)
    assert np.array_equal(given, np.asarray(b.inputs)[:, causal.state_pos] - CELL0)  # the same orbits in both layouts
    assert (np.asarray(a.inputs)[:, cot.gen_pos] == GEN).all()
    future = np.asarray(a.inputs)[:, cot.future_pos] - CELL0  # (B, 3, W): teacher forcing
    assert np.array_equal(np.asarray(a.labels)[:, cot.future_pos] - CELL0, future)
    assert (np.asarray(a.labels)[:, cot.future_sep] == SEP).all()  # the loss covers the separators too
    labelled = np.flatnonzero(np.asarray(a.labels)[0])
    assert labelled.min() == cot.prompt_length()  # nothing in the prompt is a label
    # each future state is the rule applied to the state before it: the causal layout's target for that example's k
    ks = causal.steps_ahead(b.inputs)
    target = np.asarray(b.labels)[:, causal.target_pos] - CELL0
    assert np.array_equal(future[np.arange(len(ks)), ks - 1], target)


def test_oo_layout_masks_every_future_cell():
    oo = _task("oo")
    a = oo.build("train", 0)
    assert (np.asarray(a.inputs)[:, oo.future_pos] == MASK).all()
    assert np.isin(np.asarray(a.labels)[:, oo.future_pos], (CELL0, CELL1)).all()
    assert (np.asarray(a.labels)[:, oo.future_sep] == 0).all()  # given separators are not scored
    assert oo.strata(a.inputs) is None and not oo.teacher_forced


def test_cot_augmentation_keeps_every_future_state_an_orbit_of_a_mirrored_or_shifted_rule():
    cot = _task("cot", radius=1)
    a = cot.build("train", 0)
    x, y = cot.augment(np.random.default_rng(0), np.asarray(a.inputs), np.asarray(a.labels))
    states = np.concatenate([x[:, cot.state_pos], x[:, cot.future_pos]], axis=1) - CELL0  # (B, c + 3, W)
    for s in states:  # some radius-1 rule maps every state to the next: no neighbourhood maps to two values
        table = {}
        for t in range(len(s) - 1):
            for j in range(6):
                key = (s[t][j - 1], s[t][j], s[t][(j + 1) % 6])
                assert table.setdefault(key, s[t + 1][j]) == s[t + 1][j]
    assert np.array_equal(y[:, cot.future_pos], x[:, cot.future_pos])


def test_cot_scores_each_generated_state_as_its_k():
    cot = _task("cot")
    a = cot.build("test", 0)
    preds = np.asarray(a.labels).astype(np.int64).copy()
    preds[:4, cot.future_pos[1][0]] = CELL0 + CELL1 - preds[:4, cot.future_pos[1][0]]  # state 2 wrong in 4 examples
    scores = cot.score(np.asarray(a.inputs), preds, np.asarray(a.labels))
    assert scores["exact k=1"].mean() == 1.0 and scores["exact k=3"].mean() == 1.0
    assert scores["exact k=2"].mean() == pytest.approx(12 / 16)
    assert scores["cell k=2"].mean() == pytest.approx(1 - 4 / (16 * 6))


def _cot_model(task: Ca1dTask, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(ModelConfig(**TINY), task.metadata().vocab_size, task.seq_len).eval()


def test_generation_with_the_kv_cache_equals_recomputing_the_prefix():
    task = _task("cot")
    model = _cot_model(task)
    prompt = torch.from_numpy(np.asarray(task.build("test", 0).inputs[:, : task.prompt_length()]).astype(np.int64))
    n = task.seq_len - task.prompt_length()
    with torch.no_grad():
        cached = model.generate(prompt, n)
        seq, logits_cached = prompt, []
        for _ in range(n):
            logits = model.causal_logits(seq)[:, -1]
            logits_cached.append(logits)
            seq = torch.cat((seq, logits.argmax(-1)[:, None]), 1)
    assert torch.equal(cached, seq[:, prompt.shape[1]:])


@pytest.mark.parametrize("layout", ["cot", "generate"])
def test_teacher_forced_evaluation_never_sees_the_target_states(layout):
    """Scrambling every input token after the prompt changes nothing: the answer is generated from the prompt alone
    (chain of thought, and the generate layout's answer after GEN). A teacher-forced pass (eval.decode=parallel) is
    refused on these layouts."""
    task = _task(layout)
    arrays = task.build("test", 0)
    cfg = resolve("ca1d-seq-cpu", [f"data.ca1d.layout={layout}", "data.ca1d.width=6", "data.ca1d.context=3",
                                   "data.ca1d.max_k=3", "data.ca1d.k=0"])  # the model below is a tiny one
    model = _cot_model(task)
    meta = task.metadata()
    scrambled = np.asarray(arrays.inputs).copy()
    rng = np.random.default_rng(0)
    start = task.prompt_length()
    scrambled[:, start:] = rng.integers(0, meta.vocab_size, scrambled[:, start:].shape)
    other = PuzzleArrays(**{**vars(arrays), "inputs": scrambled})
    a = evaluate_model(cfg, model, arrays, meta, torch.device("cpu"), keep=16, task=task)
    b = evaluate_model(cfg, model, other, meta, torch.device("cpu"), keep=16, task=task)
    assert a["decode"] == "greedy"
    assert np.array_equal(a["_kept_predictions"], b["_kept_predictions"])
    assert a["task_metrics"] == b["task_metrics"] and a["cell"] == b["cell"]
    # the answers are the model's own greedy tokens
    with torch.no_grad():
        own = model.generate(torch.from_numpy(np.asarray(arrays.inputs)[:, :start].astype(np.int64)),
                             task.seq_len - start)
    if layout == "cot":  # the generated states are the predictions; the generate layout reads the answer cells
        assert np.array_equal(a["_kept_predictions"][:, 0, start:], own.numpy())
    else:
        assert np.array_equal(a["_kept_predictions"][:, 0, task.target_pos], task.decode(arrays.inputs, own.numpy())
                              [:, task.target_pos])
        assert a["groups"].keys() == {"k=1", "k=2", "k=3"}  # scored per k, as the causal layout
    from ponder import UserError

    with pytest.raises(UserError, match="teacher"):
        evaluate_model(cfg.__class__(**{**vars(cfg), "eval": cfg.eval.__class__(decode="parallel")}), model, arrays,
                       meta, torch.device("cpu"), task=task)


# ---------------------------------------------------------------------------------------------------------------------
# GRPO: reward, advantages, objective


def test_reward_is_the_fraction_of_target_cells_right_in_the_final_answer():
    task = _task("causal", width=4, k=1)
    labels = np.zeros((1, task.seq_len), np.int64)
    labels[0, task.target_pos] = np.array([1, 0, 1, 1]) + CELL0  # target 1 0 1 1
    c0, c1 = CELL0, CELL1
    cases = [([c1, c0, c1, c1, PAD], 1.0),  # exact
             ([c1, c0, c0, c0, PAD], 0.5),  # two cells right
             ([c1, c0, PAD, c1, c1], 0.5),  # PAD ends the completion: what follows is not read
             ([GEN, c0, c1, c1, PAD], 0.75),  # a non-cell token is a wrong cell
             ([c0, c1, c0, c0, PAD], 0.0)]
    for completion, want in cases:
        assert task.reward(np.array([completion]), labels)[0] == pytest.approx(want), completion
    # with reasoning tokens the answer is read after the last SEP
    reasoning = np.array([[c0, c0, SEP, c0, c1, SEP, c1, c0, c1, c1, PAD]])
    assert task.reward(reasoning, labels, reasoning=True)[0] == 1.0
    assert task.reward(reasoning, labels, reasoning=False)[0] == pytest.approx(0.25)  # first 4 tokens: 0 0 sep 0
    assert task.reward(np.array([[c1, c0, c1, c1, PAD, PAD]]), labels, reasoning=True)[0] == 1.0  # no SEP: from start


def test_group_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.5, 0.5, 0.0, 0.25, 0.25, 0.25, 0.25])
    adv = group_advantages(rewards, 4, eps=1e-4)
    std = math.sqrt((0.25 + 0 + 0 + 0.25) / 3)  # unbiased, as TRL
    want = [0.5 / (std + 1e-4), 0, 0, -0.5 / (std + 1e-4), 0, 0, 0, 0]  # a group of equal rewards teaches nothing
    assert torch.allclose(adv, torch.tensor(want), atol=1e-6)


def test_completion_mask_stops_after_the_first_end_token():
    c = torch.tensor([[2, 1, 0, 2, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]])
    assert completion_mask(c).tolist() == [[True, True, True, False, False], [True] * 5, [True] + [False] * 4]


def test_clipped_objective_by_hand():
    """Two completions: A = +1 with ratios 1.5, 0.5, 1.0 (3 tokens); A = -1 with ratios 1.5, 0.5 (2 tokens, one
    masked). Per token -min(rA, clip(r, 0.8, 1.2) A): +1: -1.2, -0.5, -1.0; -1: 1.5, 0.8; mean over each
    completion's tokens, then over completions."""
    old = torch.zeros(2, 3)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.0], [1.5, 0.5, 7.0]]))
    mask = torch.tensor([[True, True, True], [True, True, False]])
    adv = torch.tensor([1.0, -1.0])
    loss, stats = clipped_objective(logp, old, adv, mask, clip=0.2)
    want = ((-1.2 - 0.5 - 1.0) / 3 + (1.5 + 0.8) / 2) / 2
    assert loss.item() == pytest.approx(want, abs=1e-6)
    assert stats["clipped"] == pytest.approx(4 / 5)  # |r - 1| > 0.2 on 4 of the 5 tokens
    # with the KL penalty (k3 estimator: exp(ref - logp) - (ref - logp) - 1)
    ref = torch.log(torch.tensor([[1.0, 1.0, 1.0], [2.0, 1.0, 1.0]]))
    kl = lambda r, p: math.exp(math.log(r) - math.log(p)) - (math.log(r) - math.log(p)) - 1  # noqa: E731
    loss_kl, stats = clipped_objective(logp, old, adv, mask, clip=0.2, beta=0.1, ref_logp=ref)
    kls = [(kl(1, 1.5) + kl(1, 0.5) + kl(1, 1.0)) / 3, (kl(2, 1.5) + kl(1, 0.5)) / 2]
    assert loss_kl.item() == pytest.approx(want + 0.1 * sum(kls) / 2, abs=1e-6)
    assert stats["kl"] == pytest.approx(sum(kls) / 2, abs=1e-6)


def test_one_iteration_gives_the_group_normalised_policy_gradient():
    """With pi_old = pi (ratio 1), d loss / d logp_t = -A / |o| / N for every unmasked token, 0 for masked ones."""
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.7, -0.1]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, True, True]])
    adv = torch.tensor([0.7, -1.3])
    loss, _ = clipped_objective(logp, logp.detach(), adv, mask, clip=0.2)
    loss.backward()
    want = torch.tensor([[-0.7 / 2 / 2, -0.7 / 2 / 2, 0.0], [1.3 / 3 / 2] * 3])
    assert torch.allclose(logp.grad, want, atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------------
# from the command line


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


SMALL = ["data.ca1d.train_size=200", "data.ca1d.test_size=24", "train.max_minutes=0", "train.log_every=1",
         "model.hidden=32", "model.n_layers=2", "model.n_heads=2", "eval.batch_size=12"]


def test_grpo_trains_from_the_cli_and_resumes_exactly(tmp_path, capsys):
    """GRPO with the KL penalty and two iterations per batch: 4 steps straight equal 2 + --resume 2, bit for bit
    (the sampling generator, the reference weights and the optimiser are in the checkpoint)."""
    args = ["train", "ca1d-seq-cpu", *SMALL, "train.regime=grpo", "train.ema=false", "train.batch_size=16", "grpo.group_size=4",
            "grpo.beta=0.01", "grpo.iterations=2", "train.checkpoint_every=2"]
    assert run(capsys, *args, "train.steps=4", "--out", str(tmp_path / "a"))[0] == 0
    assert run(capsys, *args, "train.steps=2", "--out", str(tmp_path / "b"))[0] == 0
    assert run(capsys, "train", "--resume", str(tmp_path / "b"), "train.steps=4")[0] == 0
    from ponder import checkpoint

    wa = checkpoint.load_weights(checkpoint.find(tmp_path / "a"), ema=False)
    wb = checkpoint.load_weights(checkpoint.find(tmp_path / "b"), ema=False)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    lines = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "completion_length", "exact", "kl", "clipped", "exact_k1"} <= set(lines[-1])
    assert lines[-1]["examples_seen"] == 4 * 16 // 4
    code, out, _ = run(capsys, "eval", str(tmp_path / "a"))
    assert code == 0 and "answers generated token by token" in out


def test_grpo_with_parallel_sampling_is_evaluated_from_masks(tmp_path, capsys):
    """grpo.sampling=parallel: the answer cells drawn from one pass over the masks (the policy of a model trained
    from masks); evaluated the same way, in one pass."""
    args = ["train", "ca1d-seq-cpu", *SMALL, "train.regime=grpo", "train.ema=false", "train.batch_size=16", "grpo.group_size=4",
            "grpo.sampling=parallel", "train.steps=2", "--out", str(tmp_path / "p")]
    assert run(capsys, *args)[0] == 0
    last = json.loads((tmp_path / "p" / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 <= last["reward"] <= 1 and last["completion_length"] == 20  # the W = 20 cells, no end token
    code, out, _ = run(capsys, "eval", str(tmp_path / "p"))
    assert code == 0 and "(a sequence model: one pass)" in out
    code, _, err = run(capsys, *args[:-2], "grpo.reasoning_tokens=4", "--out", str(tmp_path / "q"))
    assert code == 2 and "reasoning_tokens must be 0" in err


def test_grpo_refuses_what_it_cannot_run(tmp_path, capsys):
    base = ["train", "ca1d-seq-cpu", *SMALL, "train.regime=grpo", "train.ema=false", "train.steps=1"]
    code, _, err = run(capsys, *base, "data.ca1d.layout=cot", "--out", str(tmp_path / "a"))
    assert code == 2 and "causal or generate layout" in err
    code, _, err = run(capsys, *base, "train.ema=true", "--out", str(tmp_path / "e"))
    assert code == 2 and "set train.ema=false" in err  # it would be ignored: the policy is the weights themselves
    code, _, err = run(capsys, *base, "data.ca1d.layout=generate", "grpo.sampling=parallel", "--out",
                       str(tmp_path / "d"))
    assert code == 2 and "true answer" in err  # parallel sampling would read the answer written in the inputs
    code, _, err = run(capsys, *base, "train.batch_size=10", "grpo.group_size=4", "--out", str(tmp_path / "b"))
    assert code == 2 and "divisible by grpo.group_size" in err
    code, _, err = run(capsys, *base, "train.init=" + str(tmp_path / "nothing"), "--out", str(tmp_path / "c"))
    assert code == 2 and "Traceback" not in err
    # Refused before the run directory or its data are written (a curriculum stage's missing first stage).
    assert f"train.init: {tmp_path / 'nothing'}: no such checkpoint or run directory" in err
    assert not (tmp_path / "c").exists()


def test_study_trains_every_member_resumes_extends_and_refuses_a_changed_one(tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", "ca1d", "--out", str(out), "--models", "neox,trm", "--regimes",
            "fixed,per-k,cot,oo,grpo,grpo-control,recursion", "--set", "data.ca1d.train_size=200", "--set", "data.ca1d.test_size=24",
            "--set", "model.hidden=32", "--set", "model.n_heads=2", "--set", "eval.batch_size=12",
            "--set", "train.eval_every=1", "--set", "eval.max_examples=24"]
    code, text, err = run(capsys, *args, "--steps", "2")
    assert code == 0, err
    study = json.loads((out / "study.json").read_text())
    names = [r["name"] for r in study["members"]]
    assert names == ["neox-k1", "neox-k2", "neox", "neox-oo", "neox-cot-k1", "neox-cot", "neox-gen", "neox-grpo",
                     "neox-grpo-control", "trm"]
    assert (out / "study.png").exists() and (out / "study-curves.png").exists()
    assert "EM k=1" in (out / "study.txt").read_text() and "oracle" in (out / "study.txt").read_text()
    page = (out / "report.html").read_text()  # the study's page shows the learning curves, inlined
    assert "learning curves: test exact match per k against the training examples drawn" in page
    assert page.count("data:image/png;base64") >= 3  # study.png, study-curves.png, the members' training curves
    rows = {r["name"]: r for r in study["members"]}
    for name, r in rows.items():
        ks = {"1"} if name in ("neox-k1", "neox-cot-k1") else {"2"} if name == "neox-k2" else {"1", "2", "3", "4"}
        steps = rows["neox-grpo"]["steps"] if name == "neox-grpo-control" else max(1, round(2 * r["share"]))
        assert set(r["exact"]) == ks and r["steps"] == steps and r["examples_seen"] > 0
        assert len(r["curve"]["examples"]) == r["steps"] and set(r["curve"]["exact"]) == ks  # eval_every=1
        assert r["curve"]["examples"][-1] == r["examples_before"] + r["examples_seen"]
    assert rows["neox-k1"]["share"] == 2.0 and rows["neox-grpo"]["steps"] == 1  # the CPU scale's shares
    for name, r in rows.items():  # the table's figure of a member is its evaluation's at N_sup (not the best or last)
        res = json.loads((out / name / "compare-eval" / "results.json").read_text())
        for k, exact in r["exact"].items():
            group = res.get("groups", {}).get(f"k={k}")
            want = group["exact"][min(res["n_supervision"], len(group["exact"])) - 1] if group else \
                res["task_metrics"][f"exact k={k}"]
            assert exact == want, (name, k)
    # the k = 1 curricula: the GPT-NeoX members of its shape start from neox-k1's weights (chain of thought from its
    # own k = 1 stage in the cot layout), grpo and its control from neox-gen's (the answer written after GEN), and
    # their curves count the examples drawn before them
    assert {n: r["start"] for n, r in rows.items()} == {"neox-k1": "", "neox-k2": "neox-k1", "neox": "neox-k1",
                                                        "neox-cot-k1": "", "neox-cot": "neox-cot-k1",
                                                        "neox-oo": "neox-k1", "neox-gen": "neox-k1",
                                                        "neox-grpo": "neox-gen", "neox-grpo-control": "neox-gen",
                                                        "trm": ""}
    k1 = rows["neox-k1"]["examples_seen"]
    assert rows["neox"]["examples_before"] == k1 and rows["neox"]["curve"]["examples"][0] > k1
    assert rows["neox-grpo"]["examples_before"] == k1 + rows["neox-gen"]["examples_seen"]
    assert rows["neox-grpo-control"]["examples_before"] == rows["neox-grpo"]["examples_before"]
    assert rows["neox-grpo-control"]["examples_seen"] == rows["neox-grpo"]["examples_seen"]  # as many prompts
    from ponder.checkpoint import find, load_meta

    assert load_meta(find(out / "neox"))["init"].startswith(str((out / "neox-k1").resolve()))
    # the baselines are computed on the very test examples the members are scored on
    from ponder.tasks.dataset import read_split

    test, _ = read_split(out / "data-k=0", "test")  # the mixed-k split (data/ holds the first member's, k = 1)
    task = Ca1dTask(resolve("ca1d-seq-cpu", ["data.ca1d.k=0", "data.ca1d.test_size=24"]).data.ca1d)
    again = task.baselines(test.inputs, test.labels)
    assert study["baselines"] == {name: {str(k): v for k, v in per_k.items()} for name, per_k in again.items()}
    assert sum(g["n"] for g in json.loads((out / "neox" / "compare-eval" / "results.json").read_text())["groups"]
               .values()) == 24
    # one dataset per layout and per k, of the same orbits
    dirs = {p.name for p in out.iterdir() if p.name.startswith("data")}
    assert dirs == {"data", "data-k=2", "data-k=0", "data-k=0-layout=cot", "data-k=0-layout=oo",
                    "data-k=0-layout=puzzle", "data-layout=cot", "data-k=0-layout=generate"}
    causal, _ = read_split(out / "data-k=0", "test")
    cot, _ = read_split(out / "data-k=0-layout=cot", "test")
    c = resolve("ca1d-seq-cpu").data.ca1d
    t_causal = Ca1dTask(Ca1dConfig(**{**vars(c), "k": 0, "layout": "causal"}))
    t_cot = Ca1dTask(Ca1dConfig(**{**vars(c), "k": 0, "layout": "cot"}))
    assert np.array_equal(np.asarray(causal.inputs)[:, t_causal.state_pos], np.asarray(cot.inputs)[:, t_cot.state_pos])
    # resumable: a second call trains nothing and gives the same table
    stamps = {n: (out / n / "finished.json").stat().st_mtime_ns for n in names}
    code, text2, _ = run(capsys, *args, "--steps", "2")
    assert code == 0 and {n: (out / n / "finished.json").stat().st_mtime_ns for n in names} == stamps
    assert json.loads((out / "study.json").read_text())["members"] == study["members"]
    # a changed member is refused, nothing overwritten
    code, _, err = run(capsys, *args, "--steps", "2", "--set", "model.n_layers=3")
    assert code == 2 and "trained with another config" in err
    assert (out / "neox" / "finished.json").stat().st_mtime_ns == stamps["neox"]
    # extended: a larger budget trains every member on from its checkpoint
    code, _, err = run(capsys, *args, "--steps", "4")
    assert code == 0, err
    longer = {r["name"]: r for r in json.loads((out / "study.json").read_text())["members"]}
    assert longer["neox-k1"]["steps"] == 8 and longer["neox"]["steps"] == 4 and longer["neox-grpo"]["steps"] == 3
    assert longer["neox-grpo-control"]["steps"] == 3  # its control follows GRPO
    assert longer["neox"]["curve"]["examples"][:2] == rows["neox"]["curve"]["examples"]


def test_study_rejects_unknown_names(capsys):
    code, _, err = run(capsys, "study", "ca1d", "--out", "x", "--steps", "1", "--regimes", "magic")
    assert code == 2 and "magic" in err
    code, _, err = run(capsys, "study", "ca1d", "--out", "x", "--steps", "1", "--regimes", "grpo-control")
    assert code == 2 and "include grpo" in err  # a control without what it controls
    code, _, err = run(capsys, "study", "ca1d", "--out", "x", "--steps", "1", "--minutes", "1")
    assert code == 2 and "one budget" in err


def test_grpo_scores_each_completion_against_its_own_prompt_and_pushes_the_policy(tmp_path, capsys, monkeypatch):
    """The learning signal of one GRPO step, seen from inside: completion i of a group is scored against the
    target of prompt i // group_size (not another prompt's); the log-probabilities are those of the sampled tokens
    at their positions (near-greedy sampling: each sampled token is the policy's most likely one there); and the
    update moves the policy (the weights change, towards completions of positive advantage)."""
    import ponder.grpo as G

    seen = {}
    real_batch, real_reward, real_logp = G.batch_tensors, Ca1dTask.reward, G.token_logprobs

    def batch(*a, **k):
        out = real_batch(*a, **k)
        seen["labels"] = out[1].cpu().numpy()
        return out

    def reward(self, completion, labels, reasoning=False):
        seen["targets"], seen["completion"] = labels, completion
        return real_reward(self, completion, labels, reasoning)

    def logprobs(model, seq, positions, tokens, temperature):
        logp, cost = real_logp(model, seq, positions, tokens, temperature)
        with torch.no_grad():
            out = model(model.initial_state(seq.shape[0], seq.device), seq, torch.zeros_like(seq[:, 0]))
            best = out.logits[:, positions].float().argmax(-1)
        seen.setdefault("logp", []).append((tokens.clone(), best, logp.detach().clone()))
        seen["requires_grad"] = logp.requires_grad
        return logp, cost

    monkeypatch.setattr(G, "batch_tensors", batch)
    monkeypatch.setattr(Ca1dTask, "reward", reward)
    monkeypatch.setattr(G, "token_logprobs", logprobs)
    args = ["train", "ca1d-seq-cpu", *SMALL, "train.regime=grpo", "train.ema=false", "train.batch_size=16", "grpo.group_size=4",
            "grpo.temperature=0.001", "train.lr=1e-2", "train.steps=1", "--out", str(tmp_path / "g")]
    assert run(capsys, *args)[0] == 0
    group = 4
    labels, targets = seen["labels"], seen["targets"]
    assert len(np.unique(labels, axis=0)) > 1  # prompts with different targets in the batch
    for i in range(len(targets)):
        assert np.array_equal(targets[i], labels[i // group]), i
    tokens, best, logp = seen["logp"][0]
    assert seen["requires_grad"]
    assert (tokens == best).float().mean() > 0.9  # each sampled token is the policy's argmax there (near-ties aside)
    assert (logp > -0.1).float().mean() > 0.9  # and its log-probability is read there: ~0 at temperature 0.001: each sampled token is the policy's argmax there
    from ponder import checkpoint

    init = tmp_path / "init"
    assert run(capsys, *args[:-4], "train.steps=1", "train.lr=0", "--out", str(init))[0] == 0
    moved = checkpoint.load_weights(checkpoint.find(tmp_path / "g"), ema=False)
    still = checkpoint.load_weights(checkpoint.find(init), ema=False)
    assert any(not torch.equal(moved[k], still[k]) for k in moved)  # the policy gradient is not zero

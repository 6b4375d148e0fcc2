"""1dCA-Reasoning: the automaton against hand-worked and independent slow implementations, disjoint rules, layouts,
determinism, validity of every built and augmented example, and per-k evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ponder import UserError
from ponder.config import Ca1dConfig, resolve
from ponder.evaluate import evaluate_model, format_table
from ponder.tasks.ca1d import (CELL0, GEN, K_BASE, MASK, SEP, Ca1dTask, draw_rules, orbit, step, to_reference_ids,
                               wolfram_rule)
from ponder.tasks.dataset import Metadata

SMALL = dict(train_size=300, test_size=200)


def slow_step(state: list[int], table: list[int], radius: int) -> list[int]:
    """The definition, one cell at a time: neighbourhood x[i-r..i+r] (periodic) read as binary, leftmost bit first."""
    w = len(state)
    out = []
    for i in range(w):
        index = 0
        for j in range(i - radius, i + radius + 1):
            index = index * 2 + state[j % w]
        out.append(table[index])
    return out


def test_hand_worked_rules() -> None:
    # Rule 30 from a single live cell: the familiar triangle.
    s0 = np.array([[0, 0, 0, 1, 0, 0, 0]], np.uint8)
    o = orbit(s0, wolfram_rule(30)[None], 3)
    assert o[0, 1].tolist() == [0, 0, 1, 1, 1, 0, 0]
    assert o[0, 2].tolist() == [0, 1, 1, 0, 0, 1, 0]
    assert o[0, 3].tolist() == [1, 1, 0, 1, 1, 1, 1]
    # Rule 90 = left XOR right; the boundary is periodic: cell 4's right neighbour is cell 0.
    assert step(np.array([[1, 0, 0, 0, 0]], np.uint8), wolfram_rule(90)[None])[0].tolist() == [0, 1, 0, 0, 1]
    # Rule 110 truth table, entry v = output for neighbourhood v (111 -> 0, 110 -> 1, ..., 000 -> 0).
    assert wolfram_rule(110).tolist() == [0, 1, 1, 1, 0, 1, 1, 0]


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_step_matches_slow_definition(radius: int) -> None:
    rng = np.random.default_rng(radius)
    tables = rng.integers(0, 2, (16, 1 << (2 * radius + 1)), dtype=np.uint8)
    states = rng.integers(0, 2, (16, 23), dtype=np.uint8)
    fast = step(states, tables)
    for b in range(16):
        assert fast[b].tolist() == slow_step(states[b].tolist(), tables[b].tolist(), radius)


def test_rules_are_disjoint_and_complete() -> None:
    train, test = draw_rules(Ca1dConfig(radius=2, train_size=5000, test_size=2000), seed=0)
    assert train.shape == (5000, 32) and test.shape == (2000, 32)
    assert not {r.tobytes() for r in train} & {r.tobytes() for r in test}
    train, test = draw_rules(Ca1dConfig(radius=1, train_rules=200, test_rules=56, **SMALL), seed=3)

    def numbers(tables: np.ndarray) -> set[int]:
        return {int((row << np.arange(8)).sum()) for row in tables}

    assert len(numbers(train)) == 200 and len(numbers(test)) == 56
    assert numbers(train) | numbers(test) == set(range(256))  # all elementary rules, split in two
    with pytest.raises(UserError, match="only 256 rules"):
        draw_rules(Ca1dConfig(radius=1, **SMALL), seed=0)


def consistent(task: Ca1dTask, inputs: np.ndarray, labels: np.ndarray) -> tuple[bool, bool]:
    """(no two context transitions disagree on a truth-table entry, target = k-fold application of the observed
    table whenever every needed entry was observed). An independent check of the generator and of augmentation."""
    cfg = task.cfg
    states = task.grid(inputs)[:-1] - CELL0
    target = task.grid(labels)[-1] - CELL0
    k = int(task.steps_ahead(inputs[None])[0])
    table: dict[tuple, int] = {}
    w, r = cfg.width, cfg.radius
    for t in range(len(states) - 1):
        for i in range(w):
            key = tuple(states[t][(i + j) % w] for j in range(-r, r + 1))
            if table.setdefault(key, int(states[t + 1][i])) != states[t + 1][i]:
                return False, False
    state = states[-1]
    for _ in range(k):
        keys = [tuple(state[(i + j) % w] for j in range(-r, r + 1)) for i in range(w)]
        if any(key not in table for key in keys):
            return True, True  # an unseen entry: the target cannot be checked, nothing contradicts it
        state = np.array([table[key] for key in keys])
    return True, bool((state == target).all())


@pytest.mark.parametrize("layout, k, seq_len", [("puzzle", 1, 221), ("puzzle", 0, 221), ("causal", 2, 231),
                                                  ("causal", 0, 232), ("segments", 1, 420), ("segments", 0, 420),
                                                  ("generate", 3, 231), ("generate", 0, 232)])
def test_layouts_and_examples(layout: str, k: int, seq_len: int) -> None:
    task = Ca1dTask(Ca1dConfig(layout=layout, k=k, **SMALL))
    arrays = task.build("test", seed=1)
    assert arrays.inputs.shape == (200, seq_len) == (200, task.metadata().seq_len)
    labelled = arrays.labels != 0
    assert (labelled.sum(1) == 20).all() and labelled[:, -20:].all()  # the 20 target cells, nothing else
    if layout == "generate":  # the answer written after GEN: the causal layout's examples with the masks filled in
        causal = Ca1dTask(Ca1dConfig(layout="causal", k=k, **SMALL)).build("test", seed=1)
        assert (arrays.labels == causal.labels).all() and (arrays.inputs[:, :-20] == causal.inputs[:, :-20]).all()
        assert (arrays.inputs[:, -20:] == arrays.labels[:, -20:]).all() and task.teacher_forced
        assert task.prompt_length() == seq_len - 20  # generated from GEN on, as GRPO samples
        arrays = causal
    assert (arrays.inputs[:, -20:] == MASK).all()  # predicted in parallel from masks: the target is never an input
    ks = task.steps_ahead(arrays.inputs)
    assert set(ks.tolist()) == ({1, 2, 3, 4} if k == 0 else {k})
    assert set(task.strata(arrays.inputs).tolist()) == {f"k={v}" for v in set(ks.tolist())}
    checks = [consistent(task, arrays.inputs[i], arrays.labels[i]) for i in range(len(ks))]
    assert all(a and b for a, b in checks)
    if layout == "causal":
        ref = to_reference_ids(arrays.inputs[0])
        assert (ref[0:210:21] == 100).all() and ref[-21] == 101 and (ref[-20:] == 104).all()
        assert set(ref[np.r_[1:21, 22:42]].tolist()) <= {0, 1}
        if k == 0:
            assert ref[-22] == 106 + ks[0] - 1  # the reference's ca_adaptive shift token, before gen
        assert arrays.inputs[0, -21] == GEN and arrays.inputs[0, 0] == SEP
    if layout == "segments":  # [sep s_t sep s_t+1] x 9, then [gen s_9 sep-or-K target]: 42 tokens per segment
        x = arrays.inputs[0].reshape(10, 42)
        assert (x[:9, 0] == SEP).all() and (x[:9, 21] == SEP).all() and x[9, 0] == GEN
        assert (x[:8, 22:] == x[1:9, 1:21]).all() and (x[8, 22:] == x[9, 1:21]).all()  # each state twice
        assert x[9, 21] == (K_BASE + ks[0] - 1 if k == 0 else SEP)


def test_targets_differ_with_k() -> None:
    """k really counts applications of the rule: the same orbit's states 10..13 are the targets for k = 1..4."""
    cfg = dict(train_size=50, test_size=50)
    targets = [Ca1dTask(Ca1dConfig(k=k, **cfg)).build("train", seed=5).labels[:, -20:] for k in (1, 2, 3, 4)]
    # Same seed -> same rules and initial states; the targets are successive states, so most differ.
    assert all((targets[0] != t).any(1).mean() > 0.5 for t in targets[1:])
    rules, _ = draw_rules(Ca1dConfig(k=1, **cfg), seed=5)
    first = Ca1dTask(Ca1dConfig(k=4, **cfg)).build("train", seed=5).inputs[0]
    states = Ca1dTask(Ca1dConfig(k=4, **cfg)).grid(first)[:-1] - CELL0
    expected = orbit(states[-1][None], rules[:1], 4)[0, 1:]
    for k in range(4):
        assert ((targets[k][0] - CELL0) == expected[k]).all()


def test_build_is_deterministic() -> None:
    task = Ca1dTask(Ca1dConfig(k=0, **SMALL))
    a, b = task.build("train", seed=0), Ca1dTask(Ca1dConfig(k=0, **SMALL)).build("train", seed=0)
    assert a.inputs.tobytes() == b.inputs.tobytes() and a.labels.tobytes() == b.labels.tobytes()
    assert task.build("train", seed=1).inputs.tobytes() != a.inputs.tobytes()
    # test examples never share a rule with train ones: their orbits come from the disjoint rule set
    train_rules, test_rules = draw_rules(task.cfg, seed=0)
    assert not {r.tobytes() for r in train_rules} & {r.tobytes() for r in test_rules}


def test_augmentation_keeps_orbits() -> None:
    task = Ca1dTask(Ca1dConfig(k=0, **SMALL))
    arrays = task.build("train", seed=2)
    inputs, labels = task.augment(np.random.default_rng(0), arrays.inputs[:100], arrays.labels[:100])
    assert not np.array_equal(inputs, arrays.inputs[:100])
    assert np.array_equal(task.steps_ahead(inputs), task.steps_ahead(arrays.inputs[:100]))  # k kept
    assert all(all(consistent(task, inputs[i], labels[i])) for i in range(100))
    # shifting and mirroring permute cells within each state: the count of live cells per state is unchanged
    assert np.array_equal(np.sort((task.grid(inputs[0]) == CELL0 + 1).sum(1)),
                          np.sort((task.grid(arrays.inputs[0]) == CELL0 + 1).sum(1)))


def test_render() -> None:
    task = Ca1dTask(Ca1dConfig(k=2, **SMALL))
    a = task.build("test", seed=0)
    pred = a.labels[0].copy()
    pred[-1] = CELL0 + (1 - (pred[-1] - CELL0))  # flip the last cell
    text = task.render(a.inputs[0], pred, a.labels[0])
    assert text.startswith("s_0") and "s_11" in text and "1 of 20 cells wrong" in text and "k = 2" in text


class RightForSmallK(torch.nn.Module):
    """Answers exactly for k <= step number, wrong otherwise: accuracy per k must rise one k per step."""

    def __init__(self, task: Ca1dTask):
        super().__init__()
        self.task = task

    def initial_state(self, batch_size, device):
        return torch.zeros(batch_size, dtype=torch.long)

    def forward(self, state, inputs, puzzle_ids):
        from ponder.models.base import StepOutput

        step = state + 1
        k = torch.as_tensor(self.task.steps_ahead(inputs.numpy()))
        right = (k <= step)[:, None]
        labels = inputs.new_tensor(self.labels_for(inputs))
        answer = torch.where(right, labels, torch.where(labels > 0, 2 * CELL0 + 1 - labels, 0))  # wrong: every cell flipped
        logits = torch.nn.functional.one_hot(answer, K_BASE + 4).float()
        return StepOutput(step, logits, torch.full((len(k),), -1.0))

    def labels_for(self, inputs):
        return self.lookup[inputs.numpy().tobytes()]


def test_evaluation_reports_every_k() -> None:
    cfg = resolve("demo", ["data.task=ca1d", "data.ca1d.k=0", "data.ca1d.train_size=10", "data.ca1d.test_size=64",
                           "model.n_supervision=4", "eval.max_steps=6", "eval.batch_size=64"])
    task = Ca1dTask(cfg.data.ca1d)
    arrays = task.build("test", seed=0)
    model = RightForSmallK(task)
    model.lookup = {np.asarray(arrays.inputs).astype(np.int64).tobytes(): np.asarray(arrays.labels).astype(np.int64)}
    meta = Metadata(seq_len=task.seq_len, vocab_size=K_BASE + 4)
    res = evaluate_model(cfg, model, arrays, meta, torch.device("cpu"))
    groups = res["groups"]
    assert list(groups) == ["k=1", "k=2", "k=3", "k=4"]
    assert sum(g["n"] for g in groups.values()) == 64
    for k in range(1, 5):  # exact for group k is 0 before step k and 1 from step k on
        assert groups[f"k={k}"]["exact"] == [0.0] * (k - 1) + [1.0] * (6 - k + 1)
    table = format_table(res)
    assert "k=4" in table.splitlines()[1]


def test_drawn_radius1_rules_are_the_wolfram_tables_of_their_numbers() -> None:
    """The elementary rules are drawn as numbers (a seeded permutation of 0..255, taken in mirror classes); each table
    must be that number's Wolfram table (entry v = bit v), the one `step` and `wolfram_rule` use, not its mirror."""
    from ponder.tasks.splits import seeded_rng

    train, test = draw_rules(Ca1dConfig(radius=1, train_rules=200, test_rules=56, **SMALL), seed=3)
    numbers = seeded_rng(3, "ca1d_rules").permutation(256)
    assert train[0].tolist() == wolfram_rule(int(numbers[0])).tolist()  # the first number drawn opens train

    def mirror_number(n: int) -> int:  # the rule read with left and right neighbour swapped, by its number's bits
        bits = [(n >> v) & 1 for v in range(8)]
        return sum(bits[int(format(v, "03b")[::-1], 2)] << v for v in range(8))

    for side in (train, test):
        found = {int((row << np.arange(8)).sum()) for row in side}
        assert all(mirror_number(n) in found for n in found)  # every rule beside its mirror image
    assert mirror_number(30) == 86 and mirror_number(110) == 124  # Wolfram's mirror pairs


def test_segments_augmentation_moves_every_copy() -> None:
    """In the segments layout every state but the first appears twice; a shift or mirror must move both copies."""
    task = Ca1dTask(Ca1dConfig(k=0, layout="segments", **SMALL))
    arrays = task.build("train", seed=2)
    inputs, labels = task.augment(np.random.default_rng(0), arrays.inputs[:50], arrays.labels[:50])
    assert not np.array_equal(inputs, arrays.inputs[:50])
    for t, positions in task.copies:
        assert np.array_equal(inputs[:, positions], inputs[:, task.state_pos[t]])
    assert all(all(consistent(task, inputs[i], labels[i])) for i in range(50))

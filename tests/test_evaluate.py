"""The evaluator's bookkeeping on a scripted model: per-step accuracy, adaptive halting, the table."""

from dataclasses import dataclass

import numpy as np
import torch

from ponder.config import resolve
from ponder.evaluate import evaluate_model, format_table, scaling_rows
from ponder.models.base import StepOutput
from ponder.tasks import Task
from ponder.tasks.dataset import Metadata, from_pairs


class Plain(Task):
    """Scripted data of no real task: the protocol's defaults (no task scores, no groups, no pooling)."""

    name = "plain"

    def metadata(self):
        raise NotImplementedError

    def build(self, split, seed):
        raise NotImplementedError

    def render(self, inputs, preds=None, labels=None):
        raise NotImplementedError

    def grid(self, tokens):
        raise NotImplementedError


@dataclass
class Counter:
    step: torch.Tensor


class Scripted(torch.nn.Module):
    """Example i answers right from step solve_at[i] on, and its halt logit turns positive at step halt_at[i]."""

    def __init__(self, labels: np.ndarray, solve_at: list[int], halt_at: list[int]):
        super().__init__()
        self.labels = torch.as_tensor(labels.astype(np.int64))
        self.solve_at, self.halt_at = torch.tensor(solve_at), torch.tensor(halt_at)

    def initial_state(self, batch_size, device):
        return Counter(torch.zeros(batch_size, dtype=torch.long))

    def forward(self, state, inputs, puzzle_ids):
        step = state.step + 1
        rows = torch.arange(len(step))  # eval batches start at example 0 here (one batch)
        right = step >= self.solve_at[rows]
        answer = torch.where(right[:, None], self.labels[rows], (self.labels[rows] + 1) % 4)
        logits = torch.nn.functional.one_hot(answer, 4).float()
        q = torch.where(step >= self.halt_at[rows], 1.0, -1.0)
        return StepOutput(Counter(step), logits, q)


def test_scaling_and_adaptive_halting():
    labels = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2], [1, 1, 2]], np.uint8)
    arrays = from_pairs(labels.copy(), labels.copy())
    meta = Metadata(seq_len=3, vocab_size=4, ignore_label_id=None)
    cfg = resolve("demo", ["model.n_supervision=4", "eval.max_steps=8", "eval.batch_size=8", "data.sudoku.size=4"])
    # solved from steps 1, 2, 5, never (99); halting fires at steps 1, 3, 2, 6 (capped at N_sup = 4)
    model = Scripted(labels, solve_at=[1, 2, 5, 99], halt_at=[1, 3, 2, 6])
    res = evaluate_model(cfg, model, arrays, meta, torch.device("cpu"), task=Plain(None))
    assert res["steps"] == list(range(1, 9))
    np.testing.assert_allclose(res["exact"], [0.25, 0.5, 0.5, 0.5, 0.75, 0.75, 0.75, 0.75])
    # adaptive: ex0 stops at 1 (right), ex1 at 3 (right), ex2 at 2 (wrong), ex3 at the cap 4 (wrong)
    assert res["adaptive"]["exact"] == 0.5
    assert res["adaptive"]["mean_steps"] == (1 + 3 + 2 + 4) / 4
    assert [r[0] for r in scaling_rows(res)] == [1, 2, 4, 8]
    table = format_table(res)
    assert "<- N_sup" in table and "(beyond training)" in table and "mean 2.50 steps" in table


def test_fewer_steps_than_n_sup():
    """eval.max_steps below N_sup: halting is capped at the last step run, nothing indexes past the trace."""
    labels = np.array([[1, 2, 3], [2, 3, 1]], np.uint8)
    arrays = from_pairs(labels.copy(), labels.copy())
    meta = Metadata(seq_len=3, vocab_size=4, ignore_label_id=None)
    cfg = resolve("demo", ["model.n_supervision=4", "eval.max_steps=2", "eval.batch_size=8", "data.sudoku.size=4"])
    res = evaluate_model(cfg, Scripted(labels, solve_at=[1, 3], halt_at=[9, 9]), arrays, meta, torch.device("cpu"),
                         task=Plain(None))
    assert res["steps"] == [1, 2] and res["adaptive"]["mean_steps"] == 2.0 and res["adaptive"]["exact"] == 0.5
    assert "adaptive halting" in format_table(res)


class Echo(torch.nn.Module):
    """Answers every example with its own input, whatever batch it comes in."""

    def initial_state(self, batch_size, device):
        return Counter(torch.zeros(batch_size, dtype=torch.long))

    def forward(self, state, inputs, puzzle_ids):
        logits = torch.nn.functional.one_hot(inputs.long(), 4).float()
        return StepOutput(Counter(state.step + 1), logits, torch.ones(len(inputs)))


def test_kept_predictions_span_batches():
    """The step-by-step predictions kept for pictures may cover more examples than one evaluation batch."""
    labels = np.array([[1, 2, 3], [2, 3, 1], [3, 1, 2]], np.uint8)
    arrays = from_pairs(labels.copy(), labels.copy())
    meta = Metadata(seq_len=3, vocab_size=4, ignore_label_id=None)
    cfg = resolve("demo", ["model.n_supervision=2", "eval.max_steps=2", "eval.batch_size=2", "data.sudoku.size=4"])
    res = evaluate_model(cfg, Echo(), arrays, meta, torch.device("cpu"), keep=3, task=Plain(None))
    assert res["exact"] == [1.0, 1.0]
    assert np.array_equal(res["_kept_predictions"][:, 1], labels)  # all three, in order, from two batches


def test_fast_adaptive_evaluation_equals_the_trace():
    """evaluate_adaptive drops halted puzzles from the batch; its answers equal the full trace's adaptive entry."""
    from ponder.evaluate import evaluate_adaptive
    from ponder.models import build_model

    rng = np.random.default_rng(0)
    inputs = rng.integers(1, 8, (37, 36)).astype(np.uint8)
    labels = rng.integers(1, 8, (37, 36)).astype(np.uint8)
    labels[:, :10] = inputs[:, :10]  # some cells are easy, so cell accuracy varies
    arrays = from_pairs(inputs, labels)
    meta = Metadata(seq_len=36, vocab_size=8, ignore_label_id=None)
    for threshold in (0.0, 0.3):
        cfg = resolve("demo", ["model.n_supervision=6", "eval.batch_size=10", f"eval.halt_threshold={threshold}"])
        torch.manual_seed(0)
        model = build_model(cfg.model, 8, 36)
        with torch.no_grad():  # a halting head that fires at different steps for different puzzles
            model.q_head.weight.normal_(0, 0.5)
            model.q_head.bias.zero_()
        full = evaluate_model(cfg, model, arrays, meta, torch.device("cpu"), task=Plain(None))["adaptive"]
        fast = evaluate_adaptive(cfg, model, arrays, meta, torch.device("cpu"))
        assert 1.0 < fast["mean_steps"] < 6.0  # puzzles did stop at different steps
        assert fast["mean_steps"] == full["mean_steps"]
        assert fast["exact"] == full["exact"]
        assert abs(fast["cell"] - full["cell"]) < 1e-6


def test_per_group_results_are_read_through_the_evaluator():
    """The study reads per-k figures through evaluate.scores_of / exact_by_group, the inverses of what the evaluator
    writes: strata at N_sup, the per-state metrics of cot, and the logged eval_exact[...] keys."""
    from ponder.evaluate import exact_by_group, group_exact, scores_of

    strata = {"n_supervision": 2, "groups": {"k=1": {"exact": [0.1, 0.5, 0.7], "cell": [0.2, 0.6, 0.8]}},
              "task_metrics": {}}
    assert scores_of(strata, "k=1") == (0.5, 0.6) and scores_of(strata, "k=2") is None
    cot = {"n_supervision": 1, "task_metrics": {"exact k=3": 0.25, "cell k=3": 0.9}}
    assert scores_of(cot, "k=3") == (0.25, 0.9)
    assert exact_by_group({"eval_exact": 0.4, **group_exact(strata), **group_exact(cot)}) == {"k=1": 0.7, "k=3": 0.25}


class Solver(torch.nn.Module):
    """Answers each Sudoku input by the exact solver (`right`: only inputs whose first cell is a given; the others
    get the input back, blanks and all), with a halting logit of +1."""

    def __init__(self, right: str = "all"):
        super().__init__()
        self.right = right

    def initial_state(self, batch_size, device):
        return Counter(torch.zeros(batch_size, dtype=torch.long))

    def forward(self, state, inputs, puzzle_ids):
        from ponder.tasks.sudoku import solve

        rows = inputs.numpy()
        answers = np.array([solve(r - 1, 9).solutions[0] + 1 if self.right == "all" or r[0] > 1 else r for r in rows])
        logits = torch.nn.functional.one_hot(torch.as_tensor(answers.astype(np.int64)), 11).float()
        return StepOutput(Counter(state.step + 1), logits, torch.ones(len(rows)))


def test_votes_over_symmetric_versions():
    from ponder.evaluate import vote_answers
    from ponder.tasks.sudoku import SudokuTask, generate

    # The rule: valid answers first, then the most frequent, then the most confident, then the earlier version.
    a, b, c = np.array([1, 1]), np.array([2, 2]), np.array([3, 3])
    picks = vote_answers(np.array([[a, b, b, c], [a, b, b, c], [c, c, b, b], [c, c, b, b]]),
                  np.array([[0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
                  np.array([[.5, .5, .5, .5], [.1, .9, .9, .9], [.1, .1, .9, .9], [.5, .5, .5, .5]]))
    assert picks.tolist() == [[2, 2], [1, 1], [2, 2], [3, 3]]  # the last: b and c tie, c comes first

    rng = np.random.default_rng(5)
    pairs = [generate(rng, 9, 40, 45)[:2] for _ in range(6)]
    puzzles, solutions = np.stack([p for p, _ in pairs]) + 1, np.stack([s for _, s in pairs]) + 1
    arrays, meta = from_pairs(puzzles, solutions), Metadata(seq_len=81, vocab_size=11)
    task = SudokuTask(resolve("sudoku9-cpu").data.sudoku)
    cfg = resolve("sudoku9-cpu", ["eval.vote=5", "eval.max_steps=2", "eval.batch_size=10", "train.dtype=float32"])
    solved = evaluate_model(cfg, Solver(), arrays, meta, "cpu", task=task)
    assert solved["exact"] == [1.0, 1.0] and solved["vote"] == {"k": 5, "exact": [1.0, 1.0], "cell": [1.0, 1.0]}
    assert "voted" in format_table(solved)
    some = evaluate_model(cfg, Solver(right="first given"), arrays, meta, "cpu", task=task)
    single = float((puzzles[:, 0] > 1).mean())
    assert some["exact"][0] == single and 1.0 >= some["vote"]["exact"][0] > single  # one valid version wins the vote
    assert "vote" not in evaluate_model(resolve("sudoku9-cpu", ["eval.max_steps=1"]), Solver(), arrays, meta, "cpu",
                                        task=task)

"""1dCA-Reasoning ("Beyond Memorization", Rodkin et al. 2025): infer a hidden cellular-automaton rule from a few
consecutive states and predict the state k steps after the last one.

An example: a random rule (a truth table over the 2r+1 cells of a neighbourhood; r = 2 gives 32 entries, 2^32
rules), a random initial state of `width` binary cells, periodic boundary. The model sees s_0 .. s_{c-1}
(c = `context`, 10 in the paper, i.e. 9 example transitions) and must output s_{c-1+k}, k in 1..4: the rule has to be
applied k times internally with no intermediate state given. Train and test rules are disjoint by construction and
checked, so the test measures rule inference, not memory.

Truth-table bit order: the neighbourhood (x[i-r], ..., x[i+r]) read as a binary number with x[i-r] as the most
significant bit indexes the table, `next[i] = rule[index]`. For r = 1 this is Wolfram's numbering: table entry v is
bit v of the rule number (rule 30: 00011110 -> 111, 110, 101, 100, 011, 010, 001, 000 -> 0, 0, 0, 1, 1, 1, 1, 0).

Two token layouts over one vocabulary (PAD 0, cells 0/1 -> 1/2, SEP 3, GEN 4, MASK 5, K tokens 6.. for k = 1, 2, ..):
- `puzzle` (fixed length, for TRM/HRM/URM): one K token, s_0 .. s_{c-1} as c*W cells, then W MASK tokens whose labels
  are the target cells; 1 + 10*20 + 20 = 221 tokens at paper size. The target row follows s_{c-1} at the same
  offset as every given transition, so one relative-position pattern (RoPE) serves all of them.
- `causal` (the reference's GPT-NeoX / Mamba / LSTM layout with `--predict_from_mask`): SEP s_0 SEP s_1 .. SEP s_{c-1}
  [K] GEN then W MASK tokens; 10*21 + 1 + 20 = 231 tokens (232 with the K token, present in the mixed-k mode as the
  reference's `ca_adaptive` shift token). The target cells are predicted in parallel from the masks: no teacher
  forcing inside the target.
- `segments` (the reference's `--repeat_state` layout for ARMT and Mamba): one transition per segment of 2 (W + 1)
  tokens, SEP s_t SEP s_{t+1} for t = 0..c-2, then GEN s_{c-1} SEP and W MASK tokens; 10*42 = 420 tokens. In the
  mixed-k mode the K token takes the place of that last SEP (the segment keeps its length). `to_reference_ids` maps tokens to the reference code's ids (cells 0/1, sep 100, gen
  101, state mask 104, shift 106..).
Only the W target positions carry labels; every other label is 0 (ignored).
"""

from __future__ import annotations

import numpy as np

from ponder import UserError
from ponder.config import Ca1dConfig
from ponder.tasks.base import Task
from ponder.tasks.dataset import Metadata, PuzzleArrays, from_pairs
from ponder.tasks.splits import seeded_rng

PAD, CELL0, CELL1, SEP, GEN, MASK, K_BASE = 0, 1, 2, 3, 4, 5, 6  # K token of step count k is K_BASE + k - 1
REFERENCE_IDS = {PAD: 102, CELL0: 0, CELL1: 1, SEP: 100, GEN: 101, MASK: 104}  # + K tokens -> 106 + k - 1
CHUNK = 65536  # examples generated per vectorised call (bounds memory at paper size)
SMALL_RULE_SPACE = 1 << 16  # rule spaces up to this size are split by a seeded permutation of every rule


# ---------------------------------------------------------------------------------------------------------------------
# The automaton


def table_size(radius: int) -> int:
    return 1 << (2 * radius + 1)


def step(states: np.ndarray, rules: np.ndarray) -> np.ndarray:
    """One synchronous update of a batch: states (B, W) in {0, 1}, rules (B, 2^(2r+1)) -> (B, W)."""
    radius = (int(np.log2(rules.shape[-1])) - 1) // 2
    index = np.zeros(states.shape, np.int64)
    for offset in range(-radius, radius + 1):  # x[i + offset] is bit (radius - offset) of the index
        index = (index << 1) | np.roll(states, -offset, axis=-1)
    return np.take_along_axis(rules, index, axis=-1).astype(np.uint8)


def orbit(initial: np.ndarray, rules: np.ndarray, steps: int) -> np.ndarray:
    """(B, W) initial states -> (B, steps + 1, W): the state at t = 0 .. steps."""
    out = np.empty((initial.shape[0], steps + 1, initial.shape[1]), np.uint8)
    out[:, 0] = initial
    for t in range(steps):
        out[:, t + 1] = step(out[:, t], rules)
    return out


def wolfram_rule(number: int) -> np.ndarray:
    """The radius-1 truth table of an elementary rule number (0..255)."""
    return np.array([(number >> v) & 1 for v in range(8)], np.uint8)


def draw_rules(cfg: Ca1dConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rules, test rules) as (R, 2^(2r+1)) uint8 tables; no test rule is a train rule.

    Small rule spaces (radius 1: 256 rules) are split by a seeded permutation: train takes the first rules, test
    the next ones. Large spaces draw random tables; a test draw that equals a train rule is drawn again."""
    n_train = cfg.train_rules or cfg.train_size
    n_test = cfg.test_rules or cfg.test_size
    bits = table_size(cfg.radius)
    if bits <= 16:  # 2^bits rules in all: enumerate them
        space = 1 << bits
        if n_train + n_test > space:
            raise UserError(f"radius {cfg.radius} has only {space} rules, fewer than {n_train} train + {n_test} test "
                            f"rules; set data.ca1d.train_rules and data.ca1d.test_rules (e.g. {space * 4 // 5} and "
                            f"{space - space * 4 // 5}): examples then cycle over the rules")
        numbers = seeded_rng(seed, "ca1d_rules").permutation(space)[: n_train + n_test]
        tables = ((numbers[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
        return tables[:n_train], tables[n_train:]
    train = seeded_rng(seed, "ca1d_train_rules").integers(0, 2, (n_train, bits), dtype=np.uint8)
    seen = {row.tobytes() for row in train}
    rng = seeded_rng(seed, "ca1d_test_rules")
    test = rng.integers(0, 2, (n_test, bits), dtype=np.uint8)
    clash = np.array([row.tobytes() in seen for row in test], bool)
    while clash.any():  # (for radius 2 and a million rules, a clash has probability ~2e-4 per test rule)
        test[clash] = rng.integers(0, 2, (int(clash.sum()), bits), dtype=np.uint8)
        clash = np.array([row.tobytes() in seen for row in test], bool)
    return train, test


# ---------------------------------------------------------------------------------------------------------------------
# The task


class Ca1dTask(Task):
    """Predict a cellular automaton's state k steps ahead from `context` states of an unseen rule."""

    name = "ca1d"
    config = Ca1dConfig
    summary = "1dCA-Reasoning: predict a hidden cellular-automaton rule's state k steps ahead"
    palette = ("#d9d9d9", "#ffffff", "#202020")  # display values: 0 masked/unknown, 1 cell 0, 2 cell 1

    def __init__(self, cfg: Ca1dConfig) -> None:
        self.cfg = cfg
        self.ks = list(range(1, cfg.max_k + 1)) if cfg.k == 0 else [cfg.k]
        c, w = cfg.context, cfg.width
        self.copies: list[tuple[int, np.ndarray]] = []  # (state t, positions) of repeated states (segments layout)
        if cfg.layout == "puzzle":  # K first, so that the target row is simply the row after s_{c-1}
            self.k_pos: int | None = 0
            self.state_pos = 1 + np.arange(c * w).reshape(c, w)  # position of cell j of state t
            self.target_pos = 1 + np.arange(c * w, (c + 1) * w)
            self.gen_pos = None
        elif cfg.layout == "causal":
            self.state_pos = np.arange(c)[:, None] * (w + 1) + 1 + np.arange(w)
            self.k_pos = c * (w + 1) if cfg.k == 0 else None  # the reference's shift token, before GEN
            self.gen_pos = c * (w + 1) + (1 if self.k_pos is not None else 0)
            self.target_pos = np.arange(self.gen_pos + 1, self.gen_pos + 1 + w)
        else:  # segments of 2 (W + 1): [SEP s_t SEP s_t+1] for t < c - 1, then [GEN s_c-1 SEP target]
            seg = 2 * (w + 1)
            self.state_pos = np.arange(c)[:, None] * seg + 1 + np.arange(w)  # s_t opens segment t
            self.copies = [(t + 1, t * seg + w + 2 + np.arange(w)) for t in range(c - 1)]  # s_t+1 closes it
            self.gen_pos = (c - 1) * seg
            self.target_pos = self.gen_pos + w + 2 + np.arange(w)
            self.k_pos = int(self.target_pos[0]) - 1 if cfg.k == 0 else None  # mixed k: K in place of that SEP
        self.seq_len = int(self.target_pos[-1]) + 1

    def metadata(self) -> Metadata:
        return Metadata(seq_len=self.seq_len, vocab_size=K_BASE + max(self.ks))

    # -- building

    def build(self, split: str, seed: int) -> PuzzleArrays:
        """Example i of a split uses rule i mod R of that split; initial states and (mixed mode) k are seeded draws."""
        if split not in ("train", "test"):
            raise UserError(f"unknown split {split!r}; expected 'train' or 'test'")
        cfg = self.cfg
        train_rules, test_rules = draw_rules(cfg, seed)
        rules = train_rules if split == "train" else test_rules
        size = cfg.train_size if split == "train" else cfg.test_size
        rng = seeded_rng(seed, f"ca1d_{split}_examples")
        inputs = np.empty((size, self.seq_len), np.uint8)
        labels = np.empty_like(inputs)
        for lo in range(0, size, CHUNK):
            n = min(CHUNK, size - lo)
            initial = rng.integers(0, 2, (n, cfg.width), dtype=np.uint8)
            k = rng.integers(1, cfg.max_k + 1, n) if cfg.k == 0 else np.full(n, cfg.k)
            states = orbit(initial, rules[np.arange(lo, lo + n) % len(rules)], cfg.context - 1 + int(k.max()))
            target = states[np.arange(n), cfg.context - 1 + k]
            inputs[lo:lo + n], labels[lo:lo + n] = self.encode(states[:, :cfg.context], target, k)
        return from_pairs(inputs, labels)

    def encode(self, context: np.ndarray, target: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, c, W) given states, (B, W) target state, (B,) k -> (inputs, labels), each (B, seq_len) tokens."""
        b = context.shape[0]
        inputs = np.full((b, self.seq_len), SEP, np.uint8)
        inputs[:, self.state_pos] = context + CELL0
        for t, positions in self.copies:
            inputs[:, positions] = context[:, t] + CELL0
        if self.k_pos is not None:
            inputs[:, self.k_pos] = K_BASE + np.asarray(k) - 1
        if self.gen_pos is not None:
            inputs[:, self.gen_pos] = GEN
        inputs[:, self.target_pos] = MASK
        labels = np.zeros_like(inputs)
        labels[:, self.target_pos] = target + CELL0
        return inputs, labels

    # -- training and evaluation helpers

    def steps_ahead(self, inputs: np.ndarray) -> np.ndarray:
        """(B,) the k of every example."""
        if self.k_pos is None:
            return np.full(len(inputs), self.cfg.k)
        return np.asarray(inputs)[:, self.k_pos].astype(np.int64) - K_BASE + 1

    def strata(self, inputs: np.ndarray) -> np.ndarray:
        """(B,) group label of every example: the evaluator reports every metric per k."""
        return np.array([f"k={k}" for k in self.steps_ahead(inputs)])

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random cyclic shift of all states of an example (the boundary is periodic, so the orbit stays an orbit of
        the same rule) and, with probability 1/2, a mirror image (an orbit of the mirrored rule)."""
        b, w = len(inputs), self.cfg.width
        shift = rng.integers(0, w, b)
        mirror = rng.random(b) < 0.5
        cols = (np.arange(w)[None, :] + shift[:, None]) % w
        cols = np.where(mirror[:, None], cols[:, ::-1], cols)  # (B, W): new cell j <- old cell cols[j]
        inputs, labels = inputs.copy(), labels.copy()
        rows = np.arange(b)[:, None]
        for positions in list(self.state_pos) + [pos for _, pos in self.copies] + [self.target_pos]:
            inputs[:, positions] = inputs[rows, positions[cols]]
            labels[:, positions] = labels[rows, positions[cols]]
        return inputs, labels

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(L,) tokens -> (context + 1, W) display values: the given states, then the target row."""
        t = np.asarray(tokens).astype(np.int64)
        rows = np.concatenate([t[self.state_pos], t[self.target_pos][None]])
        return np.where((rows == CELL0) | (rows == CELL1), rows, 0)

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """The given states as rows of '.' (0) and '#' (1), then the target row (prediction, wrong cells as '*')."""
        chars = np.array(["?", ".", "#"])
        given = self.grid(inputs)
        k = int(self.steps_ahead(np.asarray(inputs)[None])[0])
        c = self.cfg.context
        lines = [f"s_{t:<3} {''.join(chars[row])}" for t, row in enumerate(given[:-1])]
        name = f"s_{c - 1 + k}"
        truth = self.grid(labels)[-1] if labels is not None else None
        if preds is not None:
            pred = self.grid(preds)[-1]
            shown = chars[pred].copy()
            footer = ""
            if truth is not None:
                wrong = pred != truth
                shown[wrong] = "*"
                footer = "right" if not wrong.any() else f"{int(wrong.sum())} of {wrong.size} cells wrong (*)"
            lines.append(f"{name:<5} {''.join(shown)}   <- predicted, k = {k}" + (f"; {footer}" if footer else ""))
        if truth is not None:
            lines.append(f"{name:<5} {''.join(chars[truth])}   <- target, k = {k}")
        return "\n".join(lines)


def to_reference_ids(tokens: np.ndarray) -> np.ndarray:
    """ponder token ids -> the reference code's ids (cells 0/1, sep 100, gen 101, state mask 104, shift 106 + k - 1)."""
    tokens = np.asarray(tokens).astype(np.int64)
    out = np.where(tokens >= K_BASE, 106 + tokens - K_BASE, 0)
    for ours, theirs in REFERENCE_IDS.items():
        out = np.where(tokens == ours, theirs, out)
    return out

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
- `generate` (the reference's runner without `--predict_from_mask`, the layout of its GRPO prompt and target): the
  causal layout with the answer s_{c-1+k} written after GEN instead of W MASK tokens, teacher-forced in training
  (cell j predicted from the true cells before it), generated token by token at test time (`prompt_length`: up to
  GEN). A supervised model of this layout is the token-by-token policy that GRPO samples and trains.
- `segments` (the reference's `--repeat_state` layout for ARMT and Mamba): one transition per segment of 2 (W + 1)
  tokens, SEP s_t SEP s_{t+1} for t = 0..c-2, then GEN s_{c-1} SEP and W MASK tokens; 10*42 = 420 tokens. In the
  mixed-k mode the K token takes the place of that last SEP (the segment keeps its length).
- `cot` (the reference's O-O layout with `--cot_setting`, token-level chain of thought): SEP s_0 .. SEP s_{c-1} GEN
  then SEP s_c SEP s_c+1 .. SEP s_{c-1+n}, the n = max_k (or k) future states written out, each the next state of
  the one before. Training is teacher-forced on the true future states, the loss on every future token (SEP
  included); evaluation generates them token by token from the prompt (`prompt_length`: up to GEN), so the model
  sees only its own states, and future state j is scored as k = j.
- `oo` (the reference's O-O baseline): the cot positions with every future cell a MASK token: all n future states
  predicted in parallel, each scored as its k; labels on the cells only.
`to_reference_ids` maps tokens to the reference code's ids (cells 0/1, sep 100, gen 101, state mask 104, shift
106.., PAD as eos 102).
Only answer positions carry labels (the W target cells; cot: the future tokens); every other label is 0 (ignored).

Held-out means unseen, under the augmentations training applies (a cyclic shift and a mirror image of every orbit):
no test rule is a training rule or its mirror image (`draw_rules`, `rule_images`), and a test example whose given
states, shifted or mirrored, are a training example's is drawn again (`build`). `baseline_predictions` are the
non-learned reference points (copy the last state, continue the visible period, the oracle inference).

GRPO (`ponder.grpo`) reads the causal or generate layout as prompt (up to GEN) and answer; `reward` scores a sampled completion
by the fraction of target cells right, the answer read from its first W tokens or, with free reasoning tokens, from
the W tokens after its last SEP; PAD ends a completion (the reference's eos).
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
MAX_REDRAWS = 1000  # draws of a test example whose given states training shows, before the build gives up


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


def determined(states: np.ndarray, context: int, radius: int) -> np.ndarray:
    """(B, T, W) orbits -> (B,) whether the given transitions (s_0 -> s_1 .. s_c-2 -> s_c-1) show every truth-table
    entry that the later states s_c .. s_T-1 need: the answer at every k up to T - c follows from the given states.
    A cyclic shift or mirror image of the orbit keeps it (the mirrored rule's entries are shown alike)."""
    b = len(states)
    shown = np.zeros((b, table_size(radius)), bool)
    for t in range(context - 1):
        np.put_along_axis(shown, neighbourhoods(states[:, t], radius), True, axis=1)
    ok = np.ones(b, bool)
    for t in range(context - 1, states.shape[1] - 1):
        ok &= np.take_along_axis(shown, neighbourhoods(states[:, t], radius), axis=1).all(1)
    return ok


def prompt_hashes(context: np.ndarray) -> np.ndarray:
    """(..., c, W) given states in {0, 1} -> (...,) 64-bit hashes of their bits: equal states, equal hashes (a rare
    collision of unequal ones only makes the build draw a test example again)."""
    lead = context.shape[:-2]
    packed = np.packbits(context.reshape(-1, context.shape[-2] * context.shape[-1]), axis=1)
    packed = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    words = packed.view(np.uint64)
    h = np.full(len(words), 0xCBF29CE484222325, np.uint64)
    for col in words.T:  # FNV-style mixing, word by word (uint64 arithmetic wraps)
        h = (h ^ col) * np.uint64(0x100000001B3)
        h ^= h >> np.uint64(29)
    return h.reshape(lead)


def wolfram_rule(number: int) -> np.ndarray:
    """The radius-1 truth table of an elementary rule number (0..255)."""
    return np.array([(number >> v) & 1 for v in range(8)], np.uint8)


def mirror_rules(tables: np.ndarray) -> np.ndarray:
    """The mirrored rules: the mirror image of an orbit of rule f is an orbit of m, m[v] = f[reverse(v)] (the
    neighbourhood read right to left). Training's augmentation mirrors orbits, so it trains on m as well as f."""
    n = int(np.log2(tables.shape[-1]))
    reverse = np.array([int(format(v, f"0{n}b")[::-1], 2) for v in range(1 << n)])
    return tables[..., reverse]


def rule_images(tables: np.ndarray) -> list[np.ndarray]:
    """Every rule that training's augmentation turns the orbits of `tables` into: the rules themselves (a cyclic
    shift keeps the rule) and their mirror images. A test rule must be none of the images of a train rule."""
    return [tables, mirror_rules(tables)]


def draw_rules(cfg: Ca1dConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rules, test rules) as (R, 2^(2r+1)) uint8 tables; no test rule is a train rule or an image of one
    under training's augmentation (`rule_images`: its mirror image).

    Small rule spaces (radius 1: 256 rules) are split by a seeded permutation of the mirror classes ({f, mirror(f)}:
    a rule and its mirror image go to the same side): train takes whole classes in that order while they fit, then
    test. Large spaces draw random tables; a test draw that is an image of a train rule is drawn again."""
    n_train = cfg.train_rules or cfg.train_size
    n_test = cfg.test_rules or cfg.test_size
    bits = table_size(cfg.radius)
    if bits <= 16:  # 2^bits rules in all: enumerate them
        space = 1 << bits
        if n_train + n_test > space:
            raise UserError(f"radius {cfg.radius} has only {space} rules, fewer than {n_train} train + {n_test} test "
                            f"rules; set data.ca1d.train_rules and data.ca1d.test_rules (`ponder data ca1d --train-rules "
                            f"{space * 4 // 5} --test-rules {space - space * 4 // 5}`): examples then cycle over the "
                            f"rules")
        numbers = seeded_rng(seed, "ca1d_rules").permutation(space)
        tables = ((numbers[:, None] >> np.arange(bits)) & 1).astype(np.uint8)
        mirrored = (mirror_rules(tables).astype(np.int64) << np.arange(bits)).sum(1)
        place = {}  # rule number -> "train" / "test" / "" (a class that fitted neither)
        sides: dict[str, list[int]] = {"train": [], "test": []}
        for i, (number, mirror) in enumerate(zip(numbers.tolist(), mirrored.tolist())):
            if number in place:
                continue
            members = [i] if mirror == number else [i, int(np.flatnonzero(numbers == mirror)[0])]
            side = ("train" if len(sides["train"]) + len(members) <= n_train else
                    "test" if len(sides["test"]) + len(members) <= n_test else "")
            for j in members:
                place[int(numbers[j])] = side
            if side:
                sides[side] += members
        if len(sides["train"]) < n_train or len(sides["test"]) < n_test:
            raise UserError(f"radius {cfg.radius}: {n_train} train + {n_test} test rules cannot be split with every "
                            f"rule on the side of its mirror image; ask for fewer")
        return tables[sides["train"]], tables[sides["test"]]
    train = seeded_rng(seed, "ca1d_train_rules").integers(0, 2, (n_train, bits), dtype=np.uint8)
    seen = {row.tobytes() for image in rule_images(train) for row in image}
    rng = seeded_rng(seed, "ca1d_test_rules")
    test = rng.integers(0, 2, (n_test, bits), dtype=np.uint8)
    clash = np.array([row.tobytes() in seen for row in test], bool)
    while clash.any():  # (radius 2 and a million train rules: probability ~5e-4 per test rule)
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
    encoding_keys = ("layout", "k")  # every layout, and every k asked, holds the same rules and (up to 65,536 examples,
    #                                   one generation chunk) the same orbits of the same seed and sizes

    def __init__(self, cfg: Ca1dConfig) -> None:
        self.cfg = cfg
        self.ks = list(range(1, cfg.max_k + 1)) if cfg.k == 0 else [cfg.k]
        c, w = cfg.context, cfg.width
        self.copies: list[tuple[int, np.ndarray]] = []  # (state t, positions) of repeated states (segments layout)
        self.future_pos: np.ndarray | None = None  # cot / oo: (n, W) positions of the cells of s_c .. s_{c-1+n}
        self.future_sep: np.ndarray | None = None  # cot / oo: (n,) the SEP before each future state
        if cfg.layout in ("cot", "oo"):
            n = self.n_future
            self.state_pos = np.arange(c)[:, None] * (w + 1) + 1 + np.arange(w)
            self.k_pos = None  # every example writes out all n future states: no K token
            self.gen_pos = c * (w + 1)
            self.future_sep = self.gen_pos + 1 + np.arange(n) * (w + 1)
            self.future_pos = self.future_sep[:, None] + 1 + np.arange(w)
            self.target_pos = self.future_pos[-1]
        elif cfg.layout == "puzzle":  # K first, so that the target row is simply the row after s_{c-1}
            self.k_pos: int | None = 0
            self.state_pos = 1 + np.arange(c * w).reshape(c, w)  # position of cell j of state t
            self.target_pos = 1 + np.arange(c * w, (c + 1) * w)
            self.gen_pos = None
        elif cfg.layout in ("causal", "generate"):
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

    @property
    def n_future(self) -> int:
        """cot / oo: the future states written out (max_k in the mixed mode, else k)."""
        return self.cfg.max_k if self.cfg.k == 0 else self.cfg.k

    @property
    def teacher_forced(self) -> bool:  # type: ignore[override]
        return self.cfg.layout in ("cot", "generate")

    def prompt_length(self) -> int | None:
        """Tokens up to GEN (the causal, generate and cot layouts): what a generated answer starts after."""
        return self.gen_pos + 1 if self.cfg.layout in ("causal", "generate", "cot", "oo") else None

    def metadata(self) -> Metadata:
        """One vocabulary for every k and layout of a max_k (K tokens for k = 1..max_k), so that a model trained at
        one k or layout starts another (train.init: the CPU study's k = 1 curriculum)."""
        return Metadata(seq_len=self.seq_len, vocab_size=K_BASE + max(self.cfg.max_k, self.cfg.k))

    # -- building

    def build(self, split: str, seed: int) -> PuzzleArrays:
        """Example i of a split uses rule i mod R of that split; initial states and (mixed mode) k are seeded draws.
        A test example whose given states, under any of training's augmentations (`transforms`), are the given states of
        a training example is drawn again (new initial state and k, same rule): no test prompt is trained on."""
        if split not in ("train", "test"):
            raise UserError(f"unknown split {split!r}; expected 'train' or 'test'")
        cfg = self.cfg
        size = cfg.train_size if split == "train" else cfg.test_size
        inputs = np.empty((size, self.seq_len), np.uint8)
        labels = np.empty_like(inputs)
        hashes = []  # train: the given states' hashes, kept for the test split's check (`train_prompts`)
        for lo, states, k in self._orbits(split, seed):
            if split == "train":
                hashes.append(prompt_hashes(states[:, :cfg.context]))
            if self.future_pos is not None:  # cot / oo: every future state, whatever the example's k draw
                target = states[:, cfg.context:]
            else:
                target = states[np.arange(len(k)), cfg.context - 1 + k]
            inputs[lo:lo + len(k)], labels[lo:lo + len(k)] = self.encode(states[:, :cfg.context], target, k)
        if split == "train":
            self._train_prompts = (seed, np.unique(np.concatenate(hashes)))
        return from_pairs(inputs, labels)

    def _orbits(self, split: str, seed: int):
        """Chunks (first example, (n, context + ahead, W) orbits, (n,) k) of a split, in example order."""
        cfg = self.cfg
        train_rules, test_rules = draw_rules(cfg, seed)
        rules = train_rules if split == "train" else test_rules
        size = cfg.train_size if split == "train" else cfg.test_size
        trained = self.train_prompts(seed) if split == "test" else None
        rng = seeded_rng(seed, f"ca1d_{split}_examples")
        ahead = self.n_future if self.future_pos is not None else max(self.ks)
        steps = cfg.context - 1 + (max(ahead, cfg.max_k) if cfg.determined else ahead)
        for lo in range(0, size, CHUNK):
            n = min(CHUNK, size - lo)
            chunk_rules = rules[np.arange(lo, lo + n) % len(rules)]
            initial = rng.integers(0, 2, (n, cfg.width), dtype=np.uint8)
            k = rng.integers(1, cfg.max_k + 1, n) if cfg.k == 0 else np.full(n, cfg.k)
            states = orbit(initial, chunk_rules, steps)
            if cfg.determined or trained is not None:
                self._redraw(states, k, chunk_rules, trained, rng)
            yield lo, states[:, :cfg.context + ahead], k

    def _redraw(self, states: np.ndarray, k: np.ndarray, rules: np.ndarray, trained: np.ndarray | None,
                rng: np.random.Generator) -> None:
        """In place: every orbit that must not be used gets a new initial state (and k, in the mixed mode) under the
        same rule, until none is left: a test orbit whose given states training shows (`shown_in`), and with
        `determined` an orbit whose given states do not show every entry its next max_k states need."""
        cfg = self.cfg
        todo = np.arange(len(states))  # the orbits to check: all, then only the ones drawn again
        for _ in range(MAX_REDRAWS):
            bad = np.zeros(len(todo), bool)
            if cfg.determined:
                bad |= ~determined(states[todo, :cfg.context + cfg.max_k], cfg.context, cfg.radius)
            if trained is not None:
                bad |= self.shown_in(states[todo, :cfg.context], trained)
            todo = todo[bad]
            if not len(todo):
                return
            initial = rng.integers(0, 2, (len(todo), cfg.width), dtype=np.uint8)
            k[todo] = rng.integers(1, cfg.max_k + 1, len(todo)) if cfg.k == 0 else cfg.k
            states[todo] = orbit(initial, rules[todo], states.shape[1] - 1)
        raise UserError(f"ca1d: after {MAX_REDRAWS} draws some examples still show given states that training "
                        f"shows (under a shift or mirror image), or (data.ca1d.determined) do not determine the "
                        f"answer; this task is too small: more cells (data.ca1d.width) or given states "
                        f"(data.ca1d.context)")

    def train_prompts(self, seed: int) -> np.ndarray:
        """Sorted hashes of the given states of every training example (`prompt_hashes`); built once per seed."""
        cached = getattr(self, "_train_prompts", None)
        if cached is None or cached[0] != seed:
            c = self.cfg.context
            hashes = np.concatenate([prompt_hashes(states[:, :c]) for _, states, _ in self._orbits("train", seed)])
            self._train_prompts = cached = (seed, np.unique(hashes))
        return cached[1]

    def transforms(self) -> np.ndarray:
        """(2W, W) every transform training's augmentation draws from (`augment`: a cyclic shift by 0..W-1 cells,
        mirrored or not), as column maps: new cell j <- old cell map[j]."""
        w = self.cfg.width
        cols = (np.arange(w)[None, :] + np.arange(w)[:, None]) % w
        return np.concatenate([cols, cols[:, ::-1]])

    def shown_in(self, context: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """(B,) whether some image of each example's given states (B, c, W) under `transforms` has its hash in the
        sorted `hashes` (`train_prompts`)."""
        seen = np.zeros(len(context), bool)
        if len(hashes) == 0:
            return seen
        for cols in self.transforms():
            h = prompt_hashes(context[:, :, cols])
            seen |= hashes[np.minimum(np.searchsorted(hashes, h), len(hashes) - 1)] == h
        return seen

    def encode(self, context: np.ndarray, target: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B, c, W) given states, (B, W) target state (cot / oo: (B, n, W) future states), (B,) k -> (inputs,
        labels), each (B, seq_len) tokens."""
        b = context.shape[0]
        if self.future_pos is not None:
            inputs = np.full((b, self.seq_len), SEP, np.uint8)
            inputs[:, self.state_pos] = context + CELL0
            inputs[:, self.gen_pos] = GEN
            labels = np.zeros_like(inputs)
            labels[:, self.future_pos] = target + CELL0
            if self.teacher_forced:  # cot: the true future states as inputs, the loss on every future token
                inputs[:, self.future_pos] = target + CELL0
                labels[:, self.future_sep] = SEP
            else:  # oo: predicted in parallel from masks
                inputs[:, self.future_pos] = MASK
            return inputs, labels
        inputs = np.full((b, self.seq_len), SEP, np.uint8)
        inputs[:, self.state_pos] = context + CELL0
        for t, positions in self.copies:
            inputs[:, positions] = context[:, t] + CELL0
        if self.k_pos is not None:
            inputs[:, self.k_pos] = K_BASE + np.asarray(k) - 1
        if self.gen_pos is not None:
            inputs[:, self.gen_pos] = GEN
        inputs[:, self.target_pos] = target + CELL0 if self.teacher_forced else MASK  # generate: written out
        labels = np.zeros_like(inputs)
        labels[:, self.target_pos] = target + CELL0
        return inputs, labels

    # -- training and evaluation helpers

    def steps_ahead(self, inputs: np.ndarray) -> np.ndarray:
        """(B,) the k of every example."""
        if self.k_pos is None:
            return np.full(len(inputs), self.cfg.k)
        return np.asarray(inputs)[:, self.k_pos].astype(np.int64) - K_BASE + 1

    def answer_positions(self) -> np.ndarray:
        return self.target_pos

    def policy_refusal(self) -> str | None:
        if self.cfg.layout not in ("causal", "generate"):
            return ("train.regime=grpo reads prompts and targets of the causal or generate layout: set "
                    "data.ca1d.layout=generate")
        return None

    def strata(self, inputs: np.ndarray) -> np.ndarray | None:
        """(B,) group label of every example: the evaluator reports every metric per k. cot / oo: None (every
        example answers every k; `score` gives the per-k metrics)."""
        if self.future_pos is not None:
            return None
        return np.array([f"k={k}" for k in self.steps_ahead(inputs)])

    def score(self, inputs: np.ndarray, preds: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
        """cot / oo: exact match and cell accuracy of future state j, as `exact k=j` and `cell k=j`."""
        if self.future_pos is None:
            return {}
        right = np.asarray(preds)[:, self.future_pos] == np.asarray(labels)[:, self.future_pos]  # (B, n, W)
        out = {}
        for j in range(self.n_future):
            out[f"exact k={j + 1}"] = right[:, j].all(-1).astype(np.float32)
            out[f"cell k={j + 1}"] = right[:, j].mean(-1).astype(np.float32)
        return out

    def augment(self, rng: np.random.Generator, inputs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A random cyclic shift of all states of an example (the boundary is periodic, so the orbit stays an orbit of
        the same rule) and, with probability 1/2, a mirror image (an orbit of the mirrored rule): one of `transforms`."""
        b, w = len(inputs), self.cfg.width
        shift = rng.integers(0, w, b)
        mirror = rng.random(b) < 0.5
        cols = self.transforms()[shift + w * mirror]  # (B, W): new cell j <- old cell cols[j]
        inputs, labels = inputs.copy(), labels.copy()
        rows = np.arange(b)[:, None]
        answers = list(self.future_pos) if self.future_pos is not None else [self.target_pos]
        for positions in list(self.state_pos) + [pos for _, pos in self.copies] + answers:
            inputs[:, positions] = inputs[rows, positions[cols]]
            labels[:, positions] = labels[rows, positions[cols]]
        return inputs, labels

    def baselines(self, inputs: np.ndarray, labels: np.ndarray) -> dict[str, dict[int, float]]:
        """{predictor: {k: exact match}} of the non-learned predictors (`baseline_predictions`) on these examples,
        scored like a model (every example at its k; cot / oo: every example at every k)."""
        inputs, labels = np.asarray(inputs), np.asarray(labels)
        context = inputs[:, self.state_pos] - CELL0
        if self.future_pos is not None:
            ks = np.repeat(np.arange(1, self.n_future + 1)[None], len(inputs), 0)
            targets = labels[:, self.future_pos] - CELL0  # (B, n, W)
        else:
            ks = self.steps_ahead(inputs)[:, None]
            targets = (labels[:, self.target_pos] - CELL0)[:, None]
        out: dict[str, dict[int, float]] = {name: {} for name in BASELINES}
        for k in sorted(set(ks.ravel().tolist())):
            rows, cols = np.nonzero(ks == k)
            for name, (pred, made) in baseline_predictions(context[rows], k, self.cfg.radius).items():
                out[name][k] = float((made & (pred == targets[rows, cols]).all(-1)).mean())
        return out

    def grid(self, tokens: np.ndarray) -> np.ndarray:
        """(L,) tokens -> (context + 1, W) display values: the given states, then the target row (cot / oo:
        (context + n, W), every future state)."""
        t = np.asarray(tokens).astype(np.int64)
        answer = self.future_pos if self.future_pos is not None else self.target_pos[None]
        rows = np.concatenate([t[self.state_pos], t[answer]])
        return np.where((rows == CELL0) | (rows == CELL1), rows, 0)

    def render(self, inputs: np.ndarray, preds: np.ndarray | None = None, labels: np.ndarray | None = None) -> str:
        """The given states as rows of '.' (0) and '#' (1), then the target row (cot / oo: every future state):
        the prediction with wrong cells as '*', and the target."""
        chars = np.array(["?", ".", "#"])
        c = self.cfg.context
        given = self.grid(inputs)
        if self.future_pos is not None:
            ks = list(range(1, self.n_future + 1))
        else:
            ks = [int(self.steps_ahead(np.asarray(inputs)[None])[0])]
        lines = [f"s_{t:<3} {''.join(chars[row])}" for t, row in enumerate(given[:c])]
        truths = self.grid(labels)[c:] if labels is not None else [None] * len(ks)
        predicted = self.grid(preds)[c:] if preds is not None else [None] * len(ks)
        for k, pred, truth in zip(ks, predicted, truths):
            name = f"s_{c - 1 + k}"
            if pred is not None:
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

    def parse(self, text: str, **options) -> np.ndarray:
        """An orbit as text: the `context` given states, one per line, cells '0'/'1' or '.'/'#' (a label before the
        cells, as `render` writes "s_0   #..#", is skipped); `k` (an option) is the step to predict."""
        c, w = self.cfg.context, self.cfg.width
        rows = []
        for line in (line for line in text.splitlines() if line.strip()):
            cells = line.split()[-1]
            bad = next((ch for ch in cells if ch not in "01.#"), None)
            if bad is not None or len(cells) != w:
                raise UserError(f"state {len(rows) + 1}: {cells!r}; this model reads states of {w} cells, '0'/'1' or "
                                f"'.'/'#'")
            rows.append([ch in "1#" for ch in cells])
        if len(rows) != c:
            raise UserError(f"this model reads {c} given states (one per line), got {len(rows)}")
        k = options.get("k") or self.cfg.k
        if not k:
            raise UserError(f"this model answers k = 1..{self.cfg.max_k} steps ahead: say which (--k)")
        if k not in self.ks:
            raise UserError(f"this model answers k in {', '.join(map(str, self.ks))}, not {k}")
        context = np.array(rows, np.uint8)[None]
        target = np.zeros((1, self.n_future, w) if self.future_pos is not None else (1, w), np.uint8)
        return self.encode(context, target, np.array([k]))[0][0]

    # -- generated answers (autoregressive evaluation, GRPO)

    def answer_cells(self, completion: np.ndarray, reasoning: bool = False) -> np.ndarray:
        """(B, M) generated tokens after GEN (causal layout) -> (B, W) the answer's cells in {0, 1}, -1 where a
        token is not a cell or missing. The completion ends at its first PAD (the reference's eos). Without
        reasoning the answer is its first W tokens; with reasoning, the W tokens after its last SEP (all of them
        when it has none)."""
        completion = np.asarray(completion).astype(np.int64)
        b, m = completion.shape
        w = self.cfg.width
        ended = np.cumsum(completion == PAD, axis=1) > 0
        tokens = np.where(ended, PAD, completion)
        start = np.zeros(b, np.int64)
        if reasoning:
            is_sep = tokens == SEP
            last = m - 1 - np.argmax(is_sep[:, ::-1], axis=1)
            start = np.where(is_sep.any(1), last + 1, 0)
        cols = start[:, None] + np.arange(w)
        picked = np.take_along_axis(np.pad(tokens, ((0, 0), (0, w)), constant_values=PAD), cols, axis=1)
        return np.where((picked == CELL0) | (picked == CELL1), picked - CELL0, -1)

    def reward(self, completion: np.ndarray, labels: np.ndarray, reasoning: bool = False) -> np.ndarray:
        """(B,) the fraction of the W target cells that the completion's answer gets right (the study's GRPO
        reward: per-cell accuracy of the final answer, nothing for intermediate states)."""
        target = np.asarray(labels)[:, self.target_pos].astype(np.int64) - CELL0
        return (self.answer_cells(completion, reasoning) == target).mean(1).astype(np.float32)

    def decode(self, inputs: np.ndarray, completion: np.ndarray, reasoning: bool = False) -> np.ndarray:
        """(B, L) predictions from tokens generated after the prompt: cot writes them where the future states go;
        the causal and generate layouts read the answer (`answer_cells`) into the target positions."""
        preds = np.zeros(np.asarray(inputs).shape, np.int64)
        start = self.prompt_length()
        if self.cfg.layout in ("causal", "generate"):
            cells = self.answer_cells(completion, reasoning)
            preds[:, self.target_pos] = np.where(cells >= 0, cells + CELL0, PAD)
        else:
            n = min(completion.shape[1], preds.shape[1] - start)
            preds[:, start:start + n] = completion[:, :n]
        return preds


# ---------------------------------------------------------------------------------------------------------------------
# Non-learned predictors: what a test set allows without learning anything


BASELINES = ("copy s_c-1", "periodic", "oracle")


def neighbourhoods(states: np.ndarray, radius: int) -> np.ndarray:
    """(..., W) states -> (..., W) the truth-table index of every cell's neighbourhood (as `step` reads it)."""
    index = np.zeros(states.shape, np.int64)
    for offset in range(-radius, radius + 1):
        index = (index << 1) | np.roll(states, -offset, axis=-1)
    return index


def baseline_predictions(context: np.ndarray, k: int, radius: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """(B, c, W) given states -> {predictor: ((B, W) predicted s_c-1+k, (B,) whether it predicts at all)}:
    - copy s_c-1: the last given state (right when the orbit has reached a fixed point);
    - periodic: the smallest period p (with a cyclic shift) that the given states obey, continued k steps (right
      whenever the orbit has become periodic); the last state where none is obeyed;
    - oracle: the truth-table entries the given transitions show, applied k times to s_c-1; no prediction where a
      needed entry was never shown. The ceiling of what can be inferred from the given states alone."""
    b, c, w = context.shape
    s = context.astype(np.int64)
    out = {"copy s_c-1": (s[:, -1], np.ones(b, bool))}
    periodic, found = s[:, -1].copy(), np.zeros(b, bool)
    for p in range(1, c):
        q, rem = divmod(k - 1, p)
        for shift in range(-(w // 2), w // 2 + 1):
            obeys = ~found
            for j in range(p, c):
                obeys &= (np.roll(s[:, j - p], shift, axis=-1) == s[:, j]).all(-1)
            periodic[obeys] = np.roll(s[obeys, c - p + rem], shift * (q + 1), axis=-1)
            found |= obeys
    out["periodic"] = (periodic, np.ones(b, bool))
    table = np.zeros((b, table_size(radius)), np.int64)
    shown = np.zeros(table.shape, bool)
    for t in range(c - 1):
        index = neighbourhoods(s[:, t], radius)
        np.put_along_axis(table, index, s[:, t + 1], axis=1)
        np.put_along_axis(shown, index, True, axis=1)
    x, known = s[:, -1], np.ones(b, bool)
    for _ in range(k):
        index = neighbourhoods(x, radius)
        known &= np.take_along_axis(shown, index, axis=1).all(1)
        x = np.take_along_axis(table, index, axis=1)
    out["oracle"] = (x, known)
    return out


def to_reference_ids(tokens: np.ndarray) -> np.ndarray:
    """ponder token ids -> the reference code's ids (cells 0/1, sep 100, gen 101, state mask 104, shift 106 + k - 1)."""
    tokens = np.asarray(tokens).astype(np.int64)
    out = np.where(tokens >= K_BASE, 106 + tokens - K_BASE, 0)
    for ours, theirs in REFERENCE_IDS.items():
        out = np.where(tokens == ours, theirs, out)
    return out

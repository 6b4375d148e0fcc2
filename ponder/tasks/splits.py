"""Deterministic train/test splits shared by the tasks whose examples are (question, answer) grids.

Two sources, both deterministic in (options, seed):
- `CsvPairs`: rows of public CSV files. Train = the first train_size rows of a seeded permutation of the train file;
  test = a seeded permutation of the test file, or else the next test_size rows of the train file (disjoint).
- `GeneratedPairs`: one seeded stream of distinct generated pairs. Train = the first train_size, test = the next
  test_size, so the splits are disjoint by construction and building test never changes train; the stream is kept
  between calls so that building both splits generates each pair once.
"""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ponder import UserError
from ponder.progress import progress

_LEGACY_STREAMS = {"generate": 0, "shuffle": 1, "shuffle_test": 2, "augment": 3}  # the first task's stream ids
MAX_DUPLICATES = 10_000  # consecutive repeats before giving up: the options allow too few distinct examples

Pairs = tuple[np.ndarray, np.ndarray]


def seeded_rng(seed: int, purpose: str) -> np.random.Generator:
    """An independent seeded stream per purpose ('generate', 'shuffle', ...; other names hash to a stream id)."""
    if seed < 0:
        raise UserError(f"data.seed must be >= 0, got {seed}")
    return np.random.default_rng([seed, _LEGACY_STREAMS.get(purpose, zlib.crc32(purpose.encode()))])


class CsvPairs:
    """Splits drawn from CSV files, each file read (and validated) once."""

    def __init__(self, load: Callable[[str], Pairs], what: str, section: str) -> None:
        self.load, self.what, self.section = load, what, section  # e.g. "mazes", "data.maze"
        self._read: dict[str, Pairs] = {}

    def read(self, path: str) -> Pairs:
        if path not in self._read:
            self._read[path] = self.load(path)
        return self._read[path]

    def split(self, split: str, seed: int, csv: str, test_csv: str, train_size: int, test_size: int) -> Pairs:
        if split == "test" and test_csv:
            questions, answers = self.read(test_csv)
            rows = seeded_rng(seed, "shuffle_test").permutation(len(questions))[:test_size]
            return questions[rows], answers[rows]
        questions, answers = self.read(csv)
        if train_size > len(questions):
            raise UserError(f"{csv} has {len(questions)} {self.what}, fewer than {self.section}.train_size={train_size}")
        order = seeded_rng(seed, "shuffle").permutation(len(questions))
        rows = order[:train_size] if split == "train" else order[train_size:train_size + test_size]
        if len(rows) == 0:
            raise UserError(f"{csv}: all {len(questions)} {self.what} go to train ({self.section}.train_size="
                            f"{train_size}); lower it or set {self.section}.test_csv")
        return questions[rows], answers[rows]


class GeneratedPairs:
    """Splits from one seeded stream of distinct pairs made by `make(rng) -> (question, answer)`."""

    def __init__(self, make: Callable[[np.random.Generator], Pairs], what: str, section: str,
                 stream: str = "generate") -> None:
        self.make, self.what, self.section, self.stream = make, what, section, stream
        self._stream: tuple[int, np.random.Generator, list, list, set[bytes]] | None = None

    def split(self, split: str, seed: int, train_size: int, test_size: int) -> Pairs:
        if self._stream is None or self._stream[0] != seed:
            self._stream = (seed, seeded_rng(seed, self.stream), [], [], set())
        _, rng, questions, answers, seen = self._stream
        need = train_size + (test_size if split == "test" else 0)
        for _ in progress(range(len(questions), need), need - len(questions), f"generating {self.what}"):
            repeats = 0
            while True:
                question, answer = self.make(rng)
                if question.tobytes() not in seen:  # the answer follows from the question (unique solutions)
                    break
                repeats += 1
                if repeats >= MAX_DUPLICATES:
                    raise UserError(f"found only {len(questions)} distinct {self.what} with these options; lower "
                                    f"{self.section}.train_size + test_size ({need})")
            seen.add(question.tobytes())
            questions.append(question)
            answers.append(answer)
        part = slice(0, train_size) if split == "train" else slice(train_size, need)
        return np.stack(questions[part]), np.stack(answers[part])


def read_pair_csv(path: str | Path, kind: str, strip: bool = True) -> tuple[list[str], list[str], list[str], list[int],
                                                                            tuple[int, str] | None]:
    """The public CSV layout (a header naming `question` and `answer`, optionally `rating`, e.g.
    source,question,answer,rating) -> (questions, answers, ratings, line numbers, field_error) as text.

    `field_error` = (line, message) of the first row with the wrong number of fields: reading stops there, and the
    caller reports it after checking the rows before it. `strip=False` keeps spaces (a maze's open cells)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (expected a {kind} CSV with header source,question,answer,rating)")
    questions, answers, ratings, lines = [], [], [], []
    field_error = None
    clean = str.strip if strip else (lambda text: text)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [name.strip() for name in next(reader, [])]
            if "question" not in header or "answer" not in header:
                raise UserError(f"{path}:1: the header must name the columns question and answer "
                                f"(e.g. source,question,answer,rating), got {','.join(header)!r}")
            twice = [name for name in ("question", "answer", "rating") if header.count(name) > 1]
            if twice:
                raise UserError(f"{path}:1: the header names the column {twice[0]} {header.count(twice[0])} times")
            qi, ai = header.index("question"), header.index("answer")
            ri = header.index("rating") if "rating" in header else None
            for row in reader:
                if not row:
                    continue  # blank lines carry no example
                if len(row) != len(header):
                    field_error = (reader.line_num, f"expected {len(header)} fields ({','.join(header)}), "
                                                    f"got {len(row)}")
                    break
                questions.append(clean(row[qi]))
                answers.append(clean(row[ai]))
                ratings.append(row[ri].strip() if ri is not None else "0")
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except csv.Error as e:
        raise UserError(f"{path}: not a readable CSV ({e})") from None
    return questions, answers, ratings, lines, field_error


def rating_ok(text: str) -> bool:
    """A CSV rating: a non-negative integer that int64 holds (at most 18 digits after leading zeros)."""
    return text.isascii() and text.isdigit() and len(text.lstrip("0")) <= 18


def bad_rating(text: str) -> str:
    return f"rating {text[:40]!r} is not an integer in 0..10^18"


def check_rows(path: str | Path, good: np.ndarray, lines: list[int], explain: Callable[[int], str],
               field_error: tuple[int, str] | None, what: str) -> None:
    """Raise `UserError("path:line: what is wrong")` for the first bad row (`good` (M,) bool from vectorised checks;
    `explain(i)` words row i's fault), else for a field-count error, else for a file with no rows."""
    if not good.all():
        i = int(np.argmin(good))
        raise UserError(f"{path}:{lines[i]}: {explain(i)}")
    if field_error is not None:
        raise UserError(f"{path}:{field_error[0]}: {field_error[1]}")
    if not len(good):
        raise UserError(f"{path}: no {what} after the header")

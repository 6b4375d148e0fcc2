"""Data for retrofitted recurrence: a local text corpus (healing phase) and GSM8K (task phase and evaluation).

- Text corpus: a `.txt` file (one document per blank-line-separated block) or a `.jsonl` file (one `{"text": ...}` per
  line). Documents are tokenised, each followed by EOS, concatenated and cut into rows of `seq_len` tokens
  ("wrapped packing", as the retrofit `preprocess_data_packing.py`: a document runs on into the next row; the last
  partial row is dropped). Loss on every token.
- GSM8K: the public JSONL layout (`question`, `answer` = worked solution ending in `#### N`), validated line by line
  (`file:line: what is wrong`). The calculator annotations `<<48/2=24>>` are removed from the solutions.
- Prompt format (plain text, no chat template, also for instruct models):
      [BOS] "Question: {question}\nAnswer:" + " {solution}\n#### {N}" + EOS
  The fine-tuning loss covers the answer tokens and EOS only (labels are -100 on BOS, the prompt and padding).
  Generation stops at EOS or at STOP ("\nQuestion:"), the point where a model that never learned EOS starts a new
  problem.
- Answer extraction (`extract_answer`), the protocol of lm-eval's gsm8k "strict" + "flexible" filters in one rule:
  the first number after the LAST "####" when the text has one, else the LAST number anywhere in the text; no number
  -> None. Numbers are normalised: "$" and thousands commas dropped ("1,234" -> "1234"), a sentence's trailing "."
  is not part of the number, negatives kept, decimals compared by value ("18.0" == "18.00" == "18", "0.50" -> "0.5").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import torch

from ponder import IGNORE, UserError
from ponder.files import parse_json

STOP = "\nQuestion:"  # where a generated answer ends at the latest

# a number: optional minus (not a hyphen inside a word or range such as "3-4"), optional "$", digits with proper
# thousands commas or plain digits, optional decimals (a dot followed by digits: "18." ends a sentence)
_NUMBER = re.compile(r"(?:(?<![\w.])-)?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_CALC = re.compile(r"<<[^>]*>>")


def normalize_number(text: str) -> str:
    """"-$1,234.50" -> "-1234.5"; "18.00" -> "18"."""
    s = text.replace("$", "").replace(",", "")
    try:
        d = Decimal(s)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    out = format(d, "f")  # no int(): a number of thousands of digits is text here, not an error
    out = out.rstrip("0").rstrip(".") if "." in out else out
    return "0" if out == "-0" else out


def extract_answer(text: str) -> str | None:
    """The final answer of a solution or a completion, normalised (see the module docstring); None if none."""
    if "####" in text:
        found = _NUMBER.search(text.rsplit("####", 1)[1])
        return normalize_number(found.group()) if found else None
    found = _NUMBER.findall(text)
    return normalize_number(found[-1]) if found else None


# ---------------------------------------------------------------------------------------------------------------------
# files


@dataclass(frozen=True)
class Problem:
    question: str
    solution: str  # the worked solution without calculator annotations, ending "#### N"
    answer: str  # N, normalised


def _read_jsonl(path: str | Path, what: str) -> list[tuple[int, dict]]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file ({what})")
    rows = []
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = parse_json(line, f"{path}:{i}")
            if not isinstance(row, dict):
                raise UserError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
            rows.append((i, row))
    if not rows:
        raise UserError(f"{path}: empty ({what})")
    return rows


def load_gsm8k(path: str | Path, limit: int = 0) -> list[Problem]:
    """GSM8K problems from a JSONL file in the public layout; `limit` > 0 keeps the first `limit`."""
    problems = []
    for i, row in _read_jsonl(path, "GSM8K JSONL with question and answer fields"):
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise UserError(f"{path}:{i}: field {key!r} missing or not a non-empty string")
        if "####" not in row["answer"]:
            raise UserError(f"{path}:{i}: answer does not end in '#### N' (the GSM8K final-answer marker)")
        answer = extract_answer(row["answer"])
        if answer is None:
            raise UserError(f"{path}:{i}: no number after '####' in the answer")
        solution = _CALC.sub("", row["answer"]).strip()
        problems.append(Problem(row["question"].strip(), solution, answer))
        if limit and len(problems) == limit:
            break
    return problems


def load_documents(path: str | Path) -> list[str]:
    """Documents of a text corpus: .txt (blank-line-separated blocks) or .jsonl ({"text": ...} per line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        docs = []
        for i, row in _read_jsonl(path, "text corpus, one {\"text\": ...} per line"):
            if not isinstance(row.get("text"), str):
                raise UserError(f"{path}:{i}: field 'text' missing or not a string")
            docs.append(row["text"])
    elif path.suffix == ".txt":
        if not path.is_file():
            raise UserError(f"{path}: no such file (text corpus)")
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        docs = [b.strip() for b in re.split(r"\n\s*\n", text) if b.strip()]
    else:
        raise UserError(f"{path}: a text corpus must be a .txt or .jsonl file")
    docs = [d for d in docs if d]
    if not docs:
        raise UserError(f"{path}: holds no text")
    return docs


# ---------------------------------------------------------------------------------------------------------------------
# tokenisation


def _encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def _bos(tokenizer) -> list[int]:
    return [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []


def pack_documents(docs: list[str], tokenizer, seq_len: int) -> torch.Tensor:
    """Wrapped packing: (rows, seq_len) token ids; each document ends with EOS and runs on into the next row."""
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    ids = [t for d in docs for t in _encode(tokenizer, d) + eos]
    rows = len(ids) // seq_len
    if rows == 0:
        raise UserError(f"the text corpus holds {len(ids)} tokens, fewer than one row of lm.seq_len={seq_len}")
    return torch.tensor(ids[:rows * seq_len], dtype=torch.long).view(rows, seq_len)


def prompt_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def prompt_ids(tokenizer, question: str) -> list[int]:
    return _bos(tokenizer) + _encode(tokenizer, prompt_text(question))


@dataclass(frozen=True)
class Example:
    """One fine-tuning sequence: input ids and labels of the same length (IGNORE outside the answer)."""

    input_ids: list[int]
    labels: list[int]


def task_example(tokenizer, problem: Problem, seq_len: int | None = None) -> Example:
    """Prompt + " solution" + EOS, loss on the answer and EOS; cut to seq_len tokens (the answer's tail goes)."""
    prompt = prompt_ids(tokenizer, problem.question)
    answer = _encode(tokenizer, " " + problem.solution)
    if tokenizer.eos_token_id is not None:
        answer.append(tokenizer.eos_token_id)
    ids = (prompt + answer)[:seq_len]
    labels = ([IGNORE] * len(prompt) + answer)[:seq_len]
    return Example(ids, labels)


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (B, T) input ids and labels, T = the longest example. Causal attention means real tokens never
    see the padding on their right, so no attention mask is needed."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, :len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[i, :len(e.labels)] = torch.tensor(e.labels)
    return ids, labels


def pad_id(tokenizer) -> int:
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if t is not None:
            return t
    return 0


class IndexStream:
    """An endless, seeded, resumable stream of indices into `size` items: epoch e visits them in the order
    `default_rng([seed, e]).permutation(size)`, so (epoch, offset) is the whole state."""

    def __init__(self, size: int, seed: int):
        assert size >= 1
        self.size, self.seed = size, seed
        self.epoch, self.offset = 0, 0

    def take(self, k: int) -> list[int]:
        out = []
        while len(out) < k:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.size)
            chunk = order[self.offset:self.offset + k - len(out)]
            out.extend(int(i) for i in chunk)
            self.offset += len(chunk)
            if self.offset >= self.size:
                self.epoch, self.offset = self.epoch + 1, 0
        return out

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "offset": self.offset}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = state["epoch"], state["offset"]


def check_files(lc, evaluating: bool = False) -> None:
    """The data files a run will read exist, checked before any model is loaded (a base model takes minutes):
    lm.task_data and lm.healing_data when set, lm.eval_data when `evaluating`. Relative paths are read from the
    current directory (the shipped presets' ../shared/data/... from the repository root)."""
    keys = ["task_data", "healing_data"] + (["eval_data"] if evaluating else [])
    for key in keys:
        value = getattr(lc, key)
        if value and not Path(value).is_file():
            raise UserError(f"lm.{key}={value}: no such file (relative to {Path.cwd()}); set lm.{key}=PATH to "
                            f"{'GSM8K JSONL' if key != 'healing_data' else 'a .txt or .jsonl corpus'}")
    if evaluating and not lc.eval_data:
        raise UserError("lm.eval_data is empty: give the GSM8K test JSONL, e.g. "
                        "lm.eval_data=../shared/data/gsm8k/test.jsonl")

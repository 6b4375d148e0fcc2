"""GPT-NeoX: the 1dCA study's fixed-depth Transformer baseline ("Beyond Memorization", arXiv 2508.16745), the
Hugging Face model itself (`transformers.GPTNeoXForCausalLM`), not a re-implementation.

The reference's config (`base_models/gptconfigs/neox_tiny` + the paper scripts): hidden 128, 4 layers, 4 heads, MLP
512 with GELU, rotary on 25% of each head's dimensions (base 10000), parallel residual, untied input and output
embeddings, no dropout, LayerNorm eps 1e-5, init std 0.02. ponder maps model.hidden, n_layers, n_heads,
expansion (MLP = expansion x hidden), rotary_pct and rope_theta onto it; the vocabulary is the task's (1dCA: 6 + K
tokens; the reference's tokenizer has 128 rows). The reference runs this baseline inside its ARMT wrapper with the
memory frozen and one segment, which is this plain model (its one memory token sits after every real token).
With model.act the layers are repeated per token (`ponder.models.halting`).
Weights at the paper config: 826,112 with the reference's 128-token vocabulary (tests/test_sequence_models.py).
"""

from __future__ import annotations

import inspect

from torch import Tensor

from ponder.config import ModelConfig
from ponder.models.base import Sequence
from ponder.models.halting import adaptive


def neox_config(cfg: ModelConfig, vocab_size: int, seq_len: int):
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=cfg.hidden, num_hidden_layers=cfg.n_layers,
                         num_attention_heads=cfg.n_heads, intermediate_size=max(1, int(cfg.expansion * cfg.hidden)),
                         hidden_act="gelu", rotary_pct=cfg.rotary_pct, rotary_emb_base=cfg.rope_theta,
                         max_position_embeddings=max(2048, seq_len), use_parallel_residual=True,
                         tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0, layer_norm_eps=1e-5,
                         initializer_range=0.02, use_cache=False)


class NeoX(Sequence):
    def __init__(self, cfg: ModelConfig, vocab_size: int, seq_len: int, num_puzzle_ids: int = 1):
        super().__init__(cfg, vocab_size, seq_len)
        from transformers import GPTNeoXForCausalLM

        self.lm = GPTNeoXForCausalLM(neox_config(cfg, vocab_size, seq_len))
        self.lm.gpt_neox.layers, self.act_units = adaptive(self.lm.gpt_neox.layers, cfg.hidden, cfg)

    def output_heads(self) -> tuple:
        return (self.lm.get_output_embeddings(),)

    def causal_logits(self, inputs: Tensor) -> Tensor:  # (B, L) -> (B, L, V)
        return self.lm(input_ids=inputs, use_cache=False).logits

    def next_token_logits(self, prompt: Tensor, steps: int):
        """With a KV cache (HF's): each new token attends to the cached keys and values of the ones before. With
        per-token ACT a layer runs a variable number of times per token, so the prefix is recomputed instead."""
        if self.act_units:
            yield from super().next_token_logits(prompt, steps)
            return
        from transformers import DynamicCache

        # the cache argument is `cache` from transformers 5.2x on, `past_key_values` before; the cache fills in place
        name = "cache" if "cache" in inspect.signature(self.lm.forward).parameters else "past_key_values"
        kv = {name: DynamicCache()}
        logits = self.lm(input_ids=prompt, use_cache=True, **kv).logits[:, -1]
        for _ in range(steps):
            token = yield logits
            logits = self.lm(input_ids=token[:, None], use_cache=True, **kv).logits[:, -1]

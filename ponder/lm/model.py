"""Retrofitted recurrence: a pretrained Hugging Face causal LM cut into prelude -> (adapter + core) x r -> coda.

Retrofitting recurrence (McLeish et al., arXiv 2511.07384) on the Huginn recipe (Geiping et al., arXiv 2502.05171);
see ../shared/reference/urm_retrofit.md sections 2 and 3.2. Design choices:
- surgery by wrapping: the base model's own `embed_tokens`, decoder layers, `norm`, `rotary_emb` and `lm_head` are
  reused (not copied, not re-implemented); layers in none of prelude/core/coda are dropped. Works for the
  Llama-family layer API of transformers 5 (Llama, Qwen2/3, OLMo-2): `layer(h, attention_mask=, position_ids=,
  cache= (past_key_values= before 5.2x), use_cache=, position_embeddings=) -> h`;
- untied embeddings (the retrofit unties them: lm_head gets its own copy), embed scale 1;
- state s0 ~ TruncNormal(0, sigma, +-3 sigma), sigma = 0.0087039 = sqrt(2/(5*5280)) (Huginn's value, no embed scale);
- injection at every iteration: s <- core(adapter([s ; e])), e = prelude output, adapter = Linear(2h -> h, no bias);
  "identity" init [0 | I] passes e through (so r = 1 equals the base model when no layer is dropped), "default"
  keeps PyTorch's init (the official code's choice, its custom init being a no-op);
- truncated backprop: the first r - k iterations run under no_grad, the last k carry gradient (Huginn's k = 8);
- the coda takes the raw core output (no norm in between, as the retrofit's `forward`);
- KV cache: one HF `DynamicCache` slot per *layer call* (a core layer owns one slot per iteration), adaptive
  per-token exit with Huginn's "kl" criterion, and its "latest" KV policy for the slots a token skipped.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import DynamicCache


@dataclass
class RecurrentOutput:
    logits: Tensor  # (B, T, V)
    past_key_values: DynamicCache | None  # filled when use_cache
    state: Tensor  # (B, T, h) final core state, detached (for warm starts / inspection)


@functools.cache
def _cache_kwarg(layer_type: type) -> str:
    """The decoder layer's cache argument: `cache` from transformers 5.2x on, `past_key_values` before (the old name
    is deprecated there and goes in 5.40)."""
    return "cache" if "cache" in inspect.signature(layer_type.forward).parameters else "past_key_values"


class _Slot:
    """The cache as one layer call sees it.

    HF attention stores its K/V with `past_key_values.update(k, v, self.layer_idx)`, keyed by the layer's fixed index,
    but a core layer runs r times per token and needs r separate entries (Huginn keys its cache by (block, step)).
    Rather than mutate `layer_idx` on the HF modules, each call gets this view, which ignores the index it is given
    and stores under its own `slot`. With `store=False` (the adaptive-exit probes of the coda) it attends to the
    stored past plus the new K/V without storing them, and keeps them in `kv` to be committed if this probe is final.
    """

    def __init__(self, cache: DynamicCache, slot: int, store: bool = True):
        self.cache, self.slot, self.store, self.kv = cache, slot, store, None

    def update(self, key: Tensor, value: Tensor, layer_idx: int, *args, **kwargs,
               ) -> tuple[Tensor, Tensor]:  # the HF Cache.update signature (its extras vary by version); layer_idx
        #                                   is ignored
        if self.store:
            return self.cache.update(key, value, self.slot)
        self.kv = key, value
        past = self.cache.layers[self.slot]
        return torch.cat([past.keys, key], dim=-2), torch.cat([past.values, value], dim=-2)


def causal_mask(T: int, past: int, attention_mask: Tensor | None, dtype: torch.dtype,
                device: torch.device) -> Tensor | None:
    """Additive (B|1, 1, T, past+T) mask: query past+i sees keys <= past+i that are not padding (attention_mask 0).

    Float, not bool, so that both the sdpa and eager attention backends accept it; finfo.min instead of -inf keeps
    fully masked (padding) rows finite. A single new token without padding sees the whole cache: no mask.
    """
    if T == 1 and attention_mask is None:
        return None
    allowed = torch.ones(T, past + T, dtype=torch.bool, device=device).tril(past)[None, None]  # (1, 1, T, S)
    if attention_mask is not None:
        assert attention_mask.shape[-1] == past + T, f"attention_mask covers {attention_mask.shape[-1]} keys, " \
                                                     f"expected past + new = {past + T}"
        allowed = allowed & attention_mask.bool()[:, None, None, :]
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)


class RecurrentLM(nn.Module):
    def __init__(self, base: nn.Module, prelude: list[int], core: list[int], coda: list[int],
                 state_std: float = 0.0087039, adapter_init: str = "identity"):
        super().__init__()
        n, used = len(base.model.layers), [*prelude, *core, *coda]
        assert core, "the recurrent core needs at least one layer"
        assert all(0 <= i < n for i in used), f"layer indices {used} out of range for a {n}-layer base model"
        assert len(set(used)) == len(used), f"prelude/core/coda overlap: {prelude} / {core} / {coda}"
        assert adapter_init in ("identity", "default"), f"adapter_init {adapter_init!r}: identity or default"
        self.config = dict(prelude=list(prelude), core=list(core), coda=list(coda), state_std=state_std,
                           adapter_init=adapter_init)
        layers = base.model.layers
        self.embed = base.model.embed_tokens
        self.prelude = nn.ModuleList(layers[i] for i in prelude)
        self.core = nn.ModuleList(layers[i] for i in core)  # the recurrent block, "R" in Huginn
        self.coda = nn.ModuleList(layers[i] for i in coda)
        self.norm = base.model.norm  # ln_f
        self.rotary = base.model.rotary_emb
        self.lm_head = base.lm_head
        if self.lm_head.weight is self.embed.weight:  # untie: the retrofit trains embeddings and head separately
            self.lm_head.weight = nn.Parameter(self.embed.weight.detach().clone())
            base.config.tie_word_embeddings = False
        h = self.embed.embedding_dim
        self.adapter = nn.Linear(2 * h, h, bias=False, device=self.embed.weight.device, dtype=self.embed.weight.dtype)
        if adapter_init == "identity":  # [0 | I]: adapter([s ; e]) = e
            with torch.no_grad():
                self.adapter.weight.zero_()[:, h:].copy_(torch.eye(h))

    # Cache slots: prelude layer i -> i, coda layer k -> P + k, core layer j at iteration t -> P + K + t*C + j, so
    # that the core slots can grow with r without moving the others (Huginn uses negative indices for the coda).
    def _core_slot(self, t: int, j: int) -> int:
        return len(self.prelude) + len(self.coda) + t * len(self.core) + j

    def _run(self, layers: nn.ModuleList, x: Tensor, slot0: int, ctx: dict, store: bool = True) -> Tensor:
        """Run HF decoder layers in order; layer i uses cache slot slot0 + i. ctx: mask, positions, cache."""
        cache, views = ctx["cache"], []
        for i, layer in enumerate(layers):
            view = _Slot(cache, slot0 + i, store) if cache is not None else None
            views.append(view)
            x = layer(x, attention_mask=ctx["mask"], position_ids=ctx["position_ids"],
                      **{_cache_kwarg(type(layer)): view}, use_cache=cache is not None,
                      position_embeddings=ctx["rope"])
        ctx["views"] = views  # the last run's views, for `_Slot.kv` of an exit probe
        return x

    def _context(self, x: Tensor, attention_mask: Tensor | None, cache: DynamicCache | None) -> dict:
        """What every layer call shares: RoPE (cos, sin), positions, mask and cache. x: embeddings (B, T, h)."""
        T = x.shape[1]
        past = cache.get_seq_length(0) if cache is not None else 0  # slot 0 is always written first
        position_ids = torch.arange(past, past + T, device=x.device)[None]  # (1, T)
        return dict(cache=cache, position_ids=position_ids, rope=self.rotary(x, position_ids),
                    mask=causal_mask(T, past, attention_mask, x.dtype, x.device))

    def initial_state(self, e: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """s0 ~ TruncNormal(0, sigma, [-3 sigma, 3 sigma]), like e: (B, T, h). Not scaled by an embed scale."""
        std = self.config["state_std"]
        if std == 0:  # a deterministic zero state (trunc_normal_ divides by std)
            return torch.zeros_like(e)
        return nn.init.trunc_normal_(torch.empty_like(e), 0.0, std, -3 * std, 3 * std, generator=generator)

    def _core(self, s: Tensor, e: Tensor, t: int, ctx: dict) -> Tensor:
        """One recurrence: s <- core(adapter([s ; e])), iteration t (0-based) for the cache slots."""
        return self._run(self.core, self.adapter(torch.cat([s, e], dim=-1)), self._core_slot(t, 0), ctx)

    def _head(self, s: Tensor, ctx: dict, store: bool = True) -> Tensor:
        """coda -> ln_f -> lm_head: (B, T, h) -> (B, T, V)."""
        return self.lm_head(self.norm(self._run(self.coda, s, len(self.prelude), ctx, store)))

    def forward(self, input_ids: Tensor, num_steps: int, num_grad_steps: int | None = None,
                attention_mask: Tensor | None = None, past_key_values: DynamicCache | None = None,
                use_cache: bool = False, generator: torch.Generator | None = None) -> RecurrentOutput:
        """input_ids (B, T); num_steps = r iterations of the core, the last num_grad_steps (k) with gradient
        (None: all). attention_mask (B, past + T): 1 = token, 0 = padding (positions stay 0..past+T-1)."""
        assert num_steps >= 1, f"num_steps {num_steps} < 1"
        k = num_steps if num_grad_steps is None else num_grad_steps
        assert 0 <= k <= num_steps, f"num_grad_steps {k} not in [0, {num_steps}]"
        cache = DynamicCache() if use_cache and past_key_values is None else past_key_values
        x = self.embed(input_ids)  # (B, T, h)
        ctx = self._context(x, attention_mask, cache)
        e = self._run(self.prelude, x, 0, ctx)  # (B, T, h) prelude output
        s = self.initial_state(e, generator)
        with torch.no_grad():  # truncated backprop: the first r - k iterations build no graph
            for t in range(num_steps - k):
                s = self._core(s, e, t, ctx)
        s = s.detach()
        for t in range(num_steps - k, num_steps):
            s = self._core(s, e, t, ctx)
        return RecurrentOutput(self._head(s, ctx), cache, s.detach())

    @torch.no_grad()
    def _next_token(self, ids: Tensor, cache: DynamicCache | None, num_steps: int,
                    exit_threshold: float | None) -> tuple[Tensor, int]:
        """Logits (V,) after the last position of ids (1, T) and the iterations used. With a cache ids is the one
        new token; without, the whole sequence is recomputed at the depth chosen for its last token."""
        x = self.embed(ids)
        ctx = self._context(x, None, cache)
        e = self._run(self.prelude, x, 0, ctx)
        s = self.initial_state(e)
        V = self.lm_head.out_features
        prev = torch.full((V,), -math.log(V), device=ids.device)  # Huginn starts the KL from the uniform distribution
        for t in range(num_steps):
            s = self._core(s, e, t, ctx)
            if exit_threshold is not None:
                # Huginn "kl" exit: KL(previous || current) of the next-token distributions read out through the coda
                logits = self._head(s, ctx, store=False)[0, -1]
                logp = F.log_softmax(logits.float(), dim=-1)
                if F.kl_div(logp, prev, reduction="sum", log_target=True) < exit_threshold:
                    break
                prev = logp
        steps = t + 1
        if exit_threshold is None:
            logits = self._head(s, ctx)[0, -1]
        if cache is not None:
            if exit_threshold is not None:  # the last probe was the readout: commit its coda K/V, no rerun
                for view in ctx["views"]:
                    cache.update(*view.kv, view.slot)
            # Huginn's "latest" policy: the iterations this token skipped reuse its latest computed core K/V, so every
            # core slot keeps one entry per position and later tokens (which may iterate longer) can attend to it.
            for t in range(steps, num_steps):
                for j in range(len(self.core)):
                    last = cache.layers[self._core_slot(steps - 1, j)]
                    cache.update(last.keys[:, :, -1:], last.values[:, :, -1:], self._core_slot(t, j))
        return logits, steps

    @torch.no_grad()
    def generate(self, input_ids: Tensor, max_new_tokens: int, num_steps: int, use_cache: bool = True,
                 exit_threshold: float | None = None, eos_token_id: int | None = None) -> tuple[list[int], dict]:
        """Greedy decoding of one sequence (1, T) -> (new token ids, stats). stats: "steps" = core iterations per new
        token, "mean_steps" their mean. The prompt (and so the first new token) always runs num_steps;
        exit_threshold enables the per-token KL exit for the others (Huginn: 5e-4 in the paper, 1e-3 in later code)."""
        assert max_new_tokens >= 1, f"max_new_tokens {max_new_tokens} < 1"
        assert input_ids.shape[0] == 1, "generate decodes one sequence (batch size 1, as Huginn benchmarks exits)"
        cache = DynamicCache() if use_cache else None
        logits = self(input_ids, num_steps, past_key_values=cache, use_cache=use_cache).logits[0, -1]  # prefill
        ids, new, steps = input_ids, [], [num_steps]
        while True:
            new.append(int(logits.argmax()))
            if len(new) == max_new_tokens or new[-1] == eos_token_id:
                break
            ids = torch.cat([ids, ids.new_tensor([new[-1:]])], dim=1)
            logits, n = self._next_token(ids[:, -1:] if use_cache else ids, cache, num_steps, exit_threshold)
            steps.append(n)
        return new, dict(steps=steps, mean_steps=sum(steps) / len(steps))

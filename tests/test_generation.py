"""The `hf` generator: reproducible per request, independent of batch composition, greedy/top-p/stop rules."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import make_tiny

from harness.models.base import GenerationRequest, SamplingParams
from harness.models.hf_generator import HFGenerator, choose_tokens

HOT = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models on a shared 2-core box: OpenMP threads spinning against other processes make each
    # 32-wide matmul ~50x slower; one thread is faster and changes no result.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny():
    return make_tiny("llama", seed=0)


def _requests(tiny, seeds=(1, 2, 3, 4), n=2):
    texts = ["hi", "a longer question here", "mid one", "x"]
    return [GenerationRequest(tiny.formatter.prompt_ids([{"role": "user", "content": t}]), seed=s, n=n)
            for t, s in zip(texts, seeds, strict=False)]


def test_same_seed_same_samples_and_different_seeds_differ(tiny):
    a = HFGenerator(tiny, batch_size=4).generate(_requests(tiny), HOT)
    b = HFGenerator(tiny, batch_size=4).generate(_requests(tiny), HOT)
    c = HFGenerator(tiny, batch_size=4).generate(_requests(tiny, seeds=(11, 12, 13, 14)), HOT)
    assert [o.token_ids for o in a] == [o.token_ids for o in b]
    assert [o.token_ids for o in a] != [o.token_ids for o in c]
    assert all(o.token_ids[0] != o.token_ids[1] for o in a)  # the n samples of a request differ too


def test_request_output_independent_of_batch_composition(tiny):
    reqs = _requests(tiny)
    together = HFGenerator(tiny, batch_size=8).generate(reqs, HOT)
    reversed_small = HFGenerator(tiny, batch_size=3).generate(reqs[::-1], HOT)[::-1]
    alone = [HFGenerator(tiny, batch_size=1).generate([r], HOT)[0] for r in reqs]
    for x, y, z in zip(together, reversed_small, alone, strict=True):
        assert x.token_ids == y.token_ids == z.token_ids


def test_greedy_matches_transformers_generate(tiny):
    req = _requests(tiny, n=1)[1]
    out = HFGenerator(tiny).generate([req], SamplingParams(temperature=0.0, max_new_tokens=8))[0]
    ids = torch.tensor([req.prompt_ids])
    ref = tiny.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                              max_new_tokens=8, pad_token_id=tiny.tokenizer.pad_token_id, eos_token_id=None)
    assert out.token_ids[0] == ref[0, ids.shape[1]:].tolist()
    # top_p so small that only the most likely token survives == greedy
    nucleus = HFGenerator(tiny).generate([req], SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=8))[0]
    assert nucleus.token_ids == out.token_ids


def test_stops_at_end_of_turn_and_counts_tokens(tiny):
    req = _requests(tiny, n=1)[0]
    free = HFGenerator(tiny).generate([req], SamplingParams(temperature=0.0, max_new_tokens=6))[0].token_ids[0]
    # Make the 3rd greedy token a generation-config eos id: generation must stop there and drop it.
    stop_tok = free[2]
    cut = free.index(stop_tok)
    formatter = dataclasses.replace(tiny.formatter, generation_eos_ids=(stop_tok,))
    loaded = dataclasses.replace(tiny, formatter=formatter)
    gen = HFGenerator(loaded)
    out = gen.generate([req], SamplingParams(temperature=0.0, max_new_tokens=6))[0]
    assert out.token_ids[0] == free[:cut] and out.finished == [True]
    assert gen.generated_tokens == cut + 1  # the end-of-turn token was generated too
    unfinished = HFGenerator(tiny).generate([req], SamplingParams(temperature=0.0, max_new_tokens=6))[0]
    assert unfinished.finished == [False] and len(unfinished.token_ids[0]) == 6


def test_top_p_sampling_frequencies():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(4000, 1)
    gens = [torch.Generator().manual_seed(i) for i in range(4000)]
    picks = choose_tokens(logits, SamplingParams(temperature=1.0, top_p=0.8), gens)
    counts = torch.bincount(picks, minlength=4).float() / 4000
    assert counts[2] == 0 and counts[3] == 0  # outside the nucleus (0.5 + 0.3 reaches 0.8)
    assert abs(counts[0] - 0.625) < 0.03 and abs(counts[1] - 0.375) < 0.03


def test_progress_bar_and_text_decoding(tiny, capsys):
    out = HFGenerator(tiny).generate(_requests(tiny, n=1)[:2], HOT, progress="sampling")
    assert len(out) == 2 and all(len(o.texts) == 1 for o in out)
    assert out[0].texts[0] == tiny.formatter.decode(out[0].token_ids[0])
    assert "sampling" in capsys.readouterr().err


def test_top_logprobs_option_leaves_generate_unchanged(tiny):
    """`generate_with_top_logprobs` (the local judge's) draws exactly `generate`'s tokens; `generate` returns
    plain outputs computed as before; each kept token's step has the model's own top-k log-probs."""
    from harness.models.base import GenerationOutput
    from harness.models.hf_generator import TopLogprobsOutput

    reqs = _requests(tiny)
    free = HFGenerator(tiny).generate(reqs[:1], SamplingParams(temperature=0.0, max_new_tokens=6))[0].token_ids[0]
    stopping = dataclasses.replace(tiny, formatter=dataclasses.replace(tiny.formatter, generation_eos_ids=(free[2],)))
    for loaded, params in ((tiny, HOT), (stopping, SamplingParams(temperature=0.0, max_new_tokens=6))):
        plain_gen, scored_gen = HFGenerator(loaded, batch_size=3), HFGenerator(loaded, batch_size=3)
        plain = plain_gen.generate(reqs, params)
        scored = scored_gen.generate_with_top_logprobs(reqs, params, k=3)
        assert all(type(o) is GenerationOutput for o in plain)
        assert all(isinstance(o, TopLogprobsOutput) for o in scored)
        assert [(o.token_ids, o.texts, o.finished) for o in plain] == \
            [(o.token_ids, o.texts, o.finished) for o in scored]
        assert (plain_gen.generated_tokens, plain_gen.prompt_tokens) == \
            (scored_gen.generated_tokens, scored_gen.prompt_tokens)
        for out in scored:
            assert [len(t) for t in out.top_logprobs] == [len(ids) for ids in out.token_ids]  # eot not listed
            assert all(len(step) == 3 for t in out.top_logprobs for step in t)
    assert scored[0].finished == [True, True]  # (the last pair) a row that ended its turn: its stop step is dropped
    # the first step's alternatives are the model's next-token distribution over the prompt
    req = reqs[1]
    first = HFGenerator(tiny).generate_with_top_logprobs([req], SamplingParams(temperature=0.0, max_new_tokens=2),
                                                         k=4)[0].top_logprobs[0][0]
    with torch.no_grad():
        logits = tiny.model(torch.tensor([req.prompt_ids])).logits[0, -1]
    values, ids = torch.topk(torch.log_softmax(logits.float(), -1), 4)
    assert [i for i, _ in first] == ids.tolist()
    assert [v for _, v in first] == pytest.approx(values.tolist(), abs=1e-5)


# ---------------------------------------------------------------- vLLM backend against a fake `vllm` module


class _Logprob:
    def __init__(self, logprob, rank):
        self.logprob, self.rank, self.decoded_token = logprob, rank, None


class _Completion:
    def __init__(self, index, token_ids, finish_reason):
        self.index, self.token_ids, self.finish_reason, self.text = index, token_ids, finish_reason, "ignored"


class _RequestOutput:
    def __init__(self, outputs, prompt_logprobs=None):
        self.outputs, self.prompt_logprobs = outputs, prompt_logprobs


def _fake_vllm(model_for_logprobs, eot):
    """A stand-in for vLLM's documented offline API: records arguments, returns outputs of the real shape.
    Prompt log-probs are computed by a real (tiny) model so the scorer's conversion can be checked exactly."""
    import types

    calls = {"llm_kwargs": None, "generate": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            self.__dict__.update(kwargs)

    class TokensPrompt(dict):
        def __init__(self, prompt_token_ids):
            super().__init__(prompt_token_ids=prompt_token_ids)

    class LLM:
        def __init__(self, **kwargs):
            calls["llm_kwargs"] = kwargs

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"].append((prompts, sampling_params, use_tqdm))
            sps = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
            outs = []
            for prompt, sp in zip(prompts, sps, strict=True):
                ids = prompt["prompt_token_ids"]
                if getattr(sp, "prompt_logprobs", None) is not None:
                    with torch.no_grad():
                        logp = torch.log_softmax(model_for_logprobs(input_ids=torch.tensor([ids])).logits[0], -1)
                    plp = [None]
                    for t in range(1, len(ids)):
                        row = logp[t - 1]
                        top = row.topk(max(sp.prompt_logprobs, 1))
                        entry = {int(i): _Logprob(float(v), r + 1) for r, (v, i) in enumerate(zip(top.values, top.indices, strict=True))}
                        rank = int((row > row[ids[t]]).sum()) + 1
                        entry.setdefault(ids[t], _Logprob(float(row[ids[t]]), rank))  # actual token always present
                        plp.append(entry)
                    outs.append(_RequestOutput([_Completion(0, [7], "length")], plp))
                    continue
                # generation: sample j = [seed % 50, j] (+ eot for even j), listed in reverse index order
                comps = [_Completion(j, [sp.seed % 50 if sp.seed else 3, j] + ([eot] if j % 2 == 0 else []),
                                     "stop" if j % 2 == 0 else "length") for j in range(sp.n)]
                outs.append(_RequestOutput(comps[::-1]))
            return outs

    vllm = types.ModuleType("vllm")
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = TokensPrompt
    vllm.LLM, vllm.SamplingParams, vllm.inputs = LLM, SamplingParams, inputs
    return vllm, inputs, calls


def test_vllm_generator_translates_arguments_and_outputs(tiny, monkeypatch):
    import sys

    from harness.models.vllm_generator import VLLMGenerator

    eot = tiny.formatter.end_of_turn_id
    vllm, inputs, calls = _fake_vllm(tiny.model, eot)
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    loaded = dataclasses.replace(tiny, identity={**tiny.identity, "path": "/models/x", "dtype": "bfloat16"})
    gen = VLLMGenerator(loaded)
    reqs = _requests(tiny, seeds=(101, 102), n=3)[:2]
    outs = gen.generate(reqs, SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=5), progress="x")
    kw = calls["llm_kwargs"]
    assert kw["model"] == kw["tokenizer"] == "/models/x" and kw["dtype"] == "bfloat16"
    assert kw["enable_prefix_caching"] is True and "revision" not in kw
    prompts, sps, use_tqdm = calls["generate"][0]
    assert [p["prompt_token_ids"] for p in prompts] == [r.prompt_ids for r in reqs] and use_tqdm is True
    assert [(s.n, s.seed, s.temperature, s.top_p, s.max_tokens, s.stop_token_ids) for s in sps] == [
        (3, 101, 0.7, 0.9, 5, [eot]), (3, 102, 0.7, 0.9, 5, [eot])]
    # outputs back in index order, end-of-turn stripped, finished from finish_reason
    assert outs[0].token_ids == [[101 % 50, 0], [101 % 50, 1], [101 % 50, 2]]
    assert outs[0].finished == [True, False, True]
    assert outs[0].texts[1] == tiny.formatter.decode([101 % 50, 1])
    assert gen.generated_tokens == 2 * (3 + 2 + 3)
    greedy = gen.sampling_params(reqs[0], SamplingParams(temperature=0.0))
    assert greedy.temperature == 0.0 and greedy.seed is None and greedy.top_p == 1.0
    # Every stop id (end of turn + generation-config eos ids) is passed explicitly and stripped from outputs,
    # as the hf backend does: a sample that ended on another eos id is finished, without it.
    other = 101 % 50
    with_eos = VLLMGenerator(dataclasses.replace(
        loaded, formatter=dataclasses.replace(tiny.formatter, generation_eos_ids=(other,))))
    assert with_eos.sampling_params(reqs[0], SamplingParams()).stop_token_ids == sorted({eot, other})
    completion = type("C", (), {"index": 0, "token_ids": [7, other], "finish_reason": "stop"})()
    converted = with_eos.convert_output(type("R", (), {"outputs": [completion]})())
    assert converted.token_ids == [[7]] and converted.finished == [True]


def test_vllm_missing_is_a_clear_error(tiny, monkeypatch):
    import sys

    from harness.errors import ModelSourceError
    from harness.models.vllm_generator import VLLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ModelSourceError, match="pad-harness\\[vllm\\]"):
        VLLMGenerator(tiny).generate(_requests(tiny, n=1)[:1], HOT)

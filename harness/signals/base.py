"""The signal plugin contract: a `SignalSource` computes one cached artifact of shared signals.

Methods name the signals they read (`Method.signals_needed()`, e.g. "teacher_avg_logprob"); a source
`provides` one or more of them from one computation (one scoring pass of the initial student gives both
its mean log-probs and DPO's reference SUM log-probs). Sources are plugins, registered in the
`harness.signals` entry-point group under their artifact name, so a method package can ship its own
signal next to its method. The run computes each needed source once, caches it, and gives every method
the values it asked for (`load`), aligned with the samples.

The pipeline owns caching: a source says what its values depend on (`inputs`: never load a model there,
`--dry-run` plans without weights), computes them into a directory (`compute`), and reads one signal
back (`load`). The manifest it returns holds `accounting` (tokens the model processed), which the
trainer charges to every method that reads the signal (matched budget).

The work is split in chunks of prompts (harness.stages.chunks): `compute` sees one chunk's groups (or
prompts), possibly on another process of a launch, and `merge` joins the chunks' directories, in order,
into the artifact. The default merge concatenates JSON files holding an object of lists, key by key;
a source storing anything else (tensors) overrides it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from harness.config import Experiment
    from harness.methods.base import PromptGroup
    from harness.models.base import Generator, LoadedModel

Who = Literal["teacher", "student"]


class SignalContext(Protocol):
    """What a source may use: the experiment, the samples, the run's prompts and models."""

    @property
    def exp(self) -> Experiment: ...

    @property
    def prompts_key(self) -> str:
        """The prompts artifact's key (for a source that does not read the samples)."""

    def groups(self) -> list[PromptGroup]:
        """This chunk's sampled prompt groups (messages, responses, finished flags), in sample order."""

    def prompts(self) -> list[dict[str, Any]]:
        """This chunk's prompts (a source that does not read the samples: every prompt of the run, also
        those the sampling dropped, chunk by chunk)."""

    def model(self, who: Who) -> LoadedModel:
        """The teacher (with its context) or the initial student, loaded once per run."""

    def model_key(self, who: Who) -> dict[str, Any]:
        """The model's identity for cache keys (no weights loaded)."""

    def generator(self, who: Who) -> Generator:
        """`sampling.backend` around the model, with the experiment's params; one per stage, shared by its
        chunks (an engine starts once) and closed by the stage."""


class SignalSource(ABC):
    """One artifact of shared signals (see the module docstring)."""

    name: ClassVar[str]  # the artifact's name, as registered (e.g. "teacher_logprobs")
    provides: ClassVar[tuple[str, ...]]  # the signal names methods ask for
    model: ClassVar[Who] = "teacher"  # whose model computes it (its size rides along in the accounting)
    # False: its values depend on the prompts, not on the sampled responses (the teacher's own samples),
    # so its key holds no samples key, it is keyed by prompt id and the training set's filters don't see it.
    reads_samples: ClassVar[bool] = True

    @abstractmethod
    def inputs(self, ctx: SignalContext) -> dict[str, Any]:
        """Everything its values depend on beyond the samples (model identity, settings): its cache key."""

    @abstractmethod
    def compute(self, ctx: SignalContext, out: Path) -> dict[str, Any]:
        """Write the values under `out`; return the manifest (at least {"accounting": {...}})."""

    def merge(self, parts: list[Path], out: Path) -> None:
        """Join the chunks' directories, in order, into `out`: every file must be a JSON object of lists
        (anything else: override `merge`)."""
        from harness.errors import HarnessError
        from harness.store import concat_json_lists

        for entry in sorted(parts[0].iterdir()):
            if entry.name.startswith("."):
                continue  # the chunk's own bookkeeping
            if entry.suffix != ".json" or not entry.is_file():
                raise HarnessError(f"signal source {self.name!r} wrote {entry.name}, which the default merge "
                                   f"cannot join across chunks (only JSON objects of lists): override "
                                   f"`merge(parts, out)` in {type(self).__qualname__}")
            concat_json_lists(parts, entry.name, out)

    @abstractmethod
    def load(self, signal: str, path: Path) -> list[Any] | dict[str, Any]:
        """Signal `signal`'s values from the artifact at `path`: a list aligned with the samples, or (a
        source that does not read the samples) a dict keyed by prompt id."""

"""The accelerators a plan can be priced on (`--estimate-on`): peak, assumed utilisation and memory.

Time of a piece of work = its FLOPs / (peak x MFU of its kind), plus a fixed overhead per stage (model
loads, engine starts, writing the trained model). Three kinds of work, each with its own MFU:

- train: forward + backward of the student (6 N FLOPs per token; with gradient checkpointing one more
  forward is recomputed, so the time counts 8 N while the FLOPs stay 6 N, as MFU is usually quoted);
- forward: scoring (log-probs, top-k, MCQ, judge prompts and generation prefill): 2 N per token, batched,
  compute bound;
- decode: generating one token per sequence per step re-reads every weight, so at the batch sizes a run
  uses it is memory-bandwidth bound and reaches a small fraction of peak; vLLM's continuous batching of
  hundreds of sequences does much better than transformers' `generate`, hence an MFU per backend.

GPU peaks are the bf16 dense tensor-core numbers of harness.training.accounting (vendors' data sheets; the
A800 is the A100's silicon with a slower NVLink). The GPU MFUs are assumptions, stated here and printed
with every estimate, not measurements of this harness (no GPU run has been recorded yet). The `cpu` entry
is this project's 2-core reference machine: its nominal fp32 peak, with MFUs and overheads fitted to the
measured runs in docs/performance.md.

Memory (harness.estimate.memory compares each stage's peak with it): per device what the CUDA driver
reports as its total (nvidia-smi's "Total", MiB): H100 SXM 81,559 (79.6 GiB), A100/A800 80GB 81,920 (80 GiB),
H200 143,771 (140.4 GiB), L4 23,034 (22.5 GiB): a little under the data sheets' "80 GB" / "141 GB" / "24 GB".
The `cpu` entry: the reference machine's RAM (24 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import HarnessError
from harness.training.accounting import peak_flops_for


@dataclass(frozen=True)
class Accelerator:
    name: str
    peak_flops: float  # per device, FLOP/s
    mfu_train: float
    mfu_forward: float
    mfu_decode: dict[str, float]  # per generation backend; other backends take "hf"
    overhead_s: dict[str, float] = field(default_factory=dict)  # per stage kind, seconds per stage
    # Starting a generator, once per sampling stage and per row's answers: a fixed part per backend (vLLM
    # builds an engine: CUDA graphs, KV cache) plus reading the weights (params x bytes / load rate).
    engine_start_s: dict[str, float] = field(default_factory=dict)
    bytes_per_param: int = 2
    load_bytes_per_s: float = 2e9
    device_word: str = "GPU"
    note: str = ""
    memory_bytes: float = 81_920 * 2**20  # per device: what one stage's peak must fit in

    @property
    def is_gpu(self) -> bool:
        """bf16 by default (harness.models.sources.resolve_dtype) and bf16 autocast under `mixed_precision: auto`."""
        return self.device_word == "GPU"

    def engine_start(self, backend: str, params: int) -> float:
        fixed = self.engine_start_s.get(backend, self.engine_start_s.get("hf", 0.0))
        return fixed + params * self.bytes_per_param / self.load_bytes_per_s

    def mfu(self, kind: str, backend: str = "hf") -> float:
        if kind == "train":
            return self.mfu_train
        if kind == "forward":
            return self.mfu_forward
        return self.mfu_decode.get(backend, self.mfu_decode["hf"])

    def assumptions(self) -> str:
        decode = ", ".join(f"{b} {v:.0%}" for b, v in sorted(self.mfu_decode.items()))
        return (f"{self.name}: peak {self.peak_flops / 1e12:g} TFLOP/s per {self.device_word.lower()}; assumed MFU "
                f"train {self.mfu_train:.0%}, forward (scoring, prefill) {self.mfu_forward:.0%}, decode {decode}"
                + (f"; {self.note}" if self.note else ""))


def _peak(device_name: str) -> float:
    peak = peak_flops_for(device_name)
    assert peak is not None, device_name
    return peak


# Model loads from local disk (a 2-9B model in bf16: tens of seconds), writing a trained fp32 student (10 GB
# for Gemma-2-2B), and a vLLM engine start (weights, CUDA graphs, KV cache: about a minute).
_GPU_OVERHEAD = {"prompts": 1.0, "samples": 30.0, "signal": 30.0, "trainset": 1.0, "train": 90.0,
                 "answers": 5.0, "judgements": 1.0}
_GPU_DECODE = {"vllm": 0.08, "hf": 0.02}
_GPU_ENGINE = {"vllm": 60.0, "hf": 5.0}  # + weights in bf16 read at 2 GB/s

ACCELERATORS: dict[str, Accelerator] = {
    "h100": Accelerator("h100 (H100 SXM)", _peak("H100"), 0.35, 0.45, _GPU_DECODE, _GPU_OVERHEAD, _GPU_ENGINE,
                        memory_bytes=81_559 * 2**20),
    "a100": Accelerator("a100 (A100 SXM 80GB)", _peak("A100"), 0.35, 0.45, _GPU_DECODE, _GPU_OVERHEAD, _GPU_ENGINE),
    "a800": Accelerator("a800 (A800 80GB, A100 silicon)", _peak("A800"), 0.35, 0.45, _GPU_DECODE, _GPU_OVERHEAD,
                        _GPU_ENGINE),
    "h200": Accelerator("h200 (H200 SXM 141GB)", _peak("H200"), 0.35, 0.45, _GPU_DECODE, _GPU_OVERHEAD, _GPU_ENGINE,
                        memory_bytes=143_771 * 2**20),
    # NVIDIA L4 (24 GB, 121 TFLOP/s bf16 dense): the common 24 GB card; slower memory (300 GB/s) than the rest.
    "l4": Accelerator("l4 (NVIDIA L4 24GB)", _peak("L4"), 0.35, 0.45, _GPU_DECODE, _GPU_OVERHEAD, _GPU_ENGINE,
                      memory_bytes=23_034 * 2**20),
    # The 2-core reference machine (docs/performance.md): AMD EPYC, AVX2, two 256-bit FMA pipes per core =
    # 32 fp32 FLOP per cycle x 2.445 GHz x 2 cores = 156 GFLOP/s nominal. MFUs and overheads fitted (non-negative
    # least squares, per stage) to the measured stages of the offline default and the tiny preset.
    "cpu": Accelerator("cpu (2 cores, fp32)", 156e9, 0.54, 0.80, {"hf": 0.14, "vllm": 0.14},
                       {"prompts": 0.03, "samples": 0.1, "signal": 0.1, "trainset": 0.0, "train": 0.1,
                        "answers": 0.05, "judgements": 0.3},
                       engine_start_s={"hf": 0.05, "vllm": 30.0}, bytes_per_param=4, load_bytes_per_s=0.45e9,
                       device_word="machine", memory_bytes=24 * 2**30,
                       note="peak = nominal fp32 FMA rate of the 2-core reference machine; MFUs and overheads "
                            "fitted to its measured runs (docs/performance.md)"),
}


def accelerator(name: str) -> Accelerator:
    try:
        return ACCELERATORS[name.lower()]
    except KeyError:
        raise HarnessError(f"--estimate-on {name!r}: unknown accelerator; choose one of "
                           f"{', '.join(ACCELERATORS)}") from None

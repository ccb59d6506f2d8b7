"""A run holds at most three models however many rows it evaluates: the teacher, the base student and the
trained row being evaluated (harness/models/pool.py). Counting engine starts once held every generator the
run built, and with it every row's weights: smol-tuned.yaml (36 trials + 9 test rows of SmolLM2-135M) ran
out of 24 GB of memory at its 36th row.
"""

from __future__ import annotations

import gc

from helpers.experiments import small_experiment

from harness.config import parse_experiment
from harness.models.base import LoadedModel
from harness.pipeline import Pipeline


def test_a_run_holds_the_teacher_the_student_and_one_trained_row(tmp_path) -> None:
    methods = [{"name": name, "params": {"preference": "teacher_logprob"}} for name in ("sft", "dpo", "simpo", "plad")]
    data = small_experiment("memory", methods=methods, budget={"micro_batch": 2})
    pipe = Pipeline(parse_experiment(data), tmp_path, progress=False)
    pipe.run()
    gc.collect()
    # Other tests' models may be alive in this process: count this run's trained rows (their weights dirs).
    trained = [o for o in gc.get_objects() if isinstance(o, LoadedModel) and "trained" in o.identity
               and str(o.identity.get("path", "")).startswith(str(tmp_path))]
    assert len(trained) == 1, [m.identity["trained"] for m in trained]  # 4 rows were evaluated; the last is held
    assert pipe.engines.starts == 0  # the hf backend starts no engine

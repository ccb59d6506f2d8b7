"""The pipeline's stages: each a function of its inputs, writing one artifact (see harness.store)."""

# Bump a stage's version when the way it computes its output changes: that invalidates exactly the
# artifacts of that stage and of what depends on it.
STAGE_VERSIONS = {
    "prompts": 1,
    "samples": 2,  # 2: finished flags, stop ids from the chat template
    "signal": 2,  # 2: unfinished responses scored without an end token; MCQ rules
    "trainset": 1,
    "train": 2,  # 2: fp32 master weights, dropout off
    "answers": 3,  # 3: answers record whether they finished; stop ids; benchmark default lengths
    "judgements": 2,
    "selection": 1,  # 2: one judge per benchmark; GSM8K protocols; AlpacaEval identical outputs
}

"""The pipeline's stages: each a function of its inputs, writing one artifact (see harness.store)."""

# Bump a stage's version when the way it computes its output changes: that invalidates exactly the
# artifacts of that stage and of what depends on it.
STAGE_VERSIONS = {
    "prompts": 1,
    "samples": 1,
    "signal": 1,
    "trainset": 1,
    "train": 1,
    "answers": 1,
    "judgements": 1,
}

"""Baseline distillation methods, each a plugin registered through the `harness.methods` entry points.

They register exactly the way a third-party plugin does (see docs/plugins.md), so the plugin path is
exercised by the baselines themselves. One small module per method: `sft`, `seqkd`, `kd`, `dpo`,
`simpo`, `gkd`, `dpkd`, `plad`; `pairs` picks the (chosen, rejected) pair every pairwise method uses,
`batching` turns examples into packed tensors, `vocab` checks that two models share a vocabulary.
"""

"""Arena-Hard-Auto (`arena_hard`), one job per module.

`benchmark` (the `ArenaHard` benchmark), `prompts` (questions and baseline answers), `formats` (judge
prompts and verdict parsing), `tokens` (answer token counts with tiktoken, offline too), `scoring` (battles,
statistics and metrics) and `official` (scoring arena-hard-auto's own judgement files). Imports run
formats/prompts/tokens -> scoring -> official -> benchmark.
"""

from harness.benchmarks.arena_hard.benchmark import ArenaHard, ArenaHardParams

__all__ = ["ArenaHard", "ArenaHardParams"]

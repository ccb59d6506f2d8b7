"""What the harness makes can leave it, and what others make can come in.

- `model_dir`: every trained student is a complete Hugging Face model directory (weights, config, the
  tokenizer with the chat template it trained under, a generation config that stops where the harness stops).
- `export`: `pad-harness export RUN_DIR --out DIR`: each row's answers and judgements in the benchmarks'
  official formats (`Benchmark.export_official`), and its student directory.
- `hub`: `--push-to-hub REPO`: an export or a student directory uploaded with huggingface_hub, with a model card.
- External rows (`external:` in an experiment, harness.stages.external): a model trained elsewhere, or answers
  files in the official formats (`Benchmark.read_official_answers`), evaluated like any row.
"""

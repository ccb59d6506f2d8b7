"""The reference of every experiment-file key (docs/experiment-keys.md), generated from the schema
(harness.config), each built-in plugin's `Params` and the code that builds cache keys:
`python -m harness.reference > docs/experiment-keys.md`."""

"""Training methods. PAD lives here; the baselines live in the top-level `baselines` package."""

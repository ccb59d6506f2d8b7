"""Judges: chat completion (+ top log-probs) behind one interface, every call cached in SQLite."""

"""Model layer: where models come from, chat formatting, generation and sequence scoring."""

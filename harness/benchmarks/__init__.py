"""Benchmarks: items, answer generation, judging and scoring, faithful to the official tools."""

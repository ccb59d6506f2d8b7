"""pad-harness: distil preference knowledge from a teacher LM into a student, and compare methods fairly."""

__version__ = "0.1.0"

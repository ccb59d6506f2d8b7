"""`python -m harness.reference > docs/experiment-keys.md`: print the experiment-file key reference."""

import sys

from harness.reference.page import render

sys.stdout.write(render())

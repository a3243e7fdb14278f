"""Text cleaning the model-free readers share (the rules judge, the empathy judge, the prompt
classifier): typographic quotes made plain, code blocks and quoted text found."""

from __future__ import annotations

import re

STRAIGHT_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00a0": " "})
"""For str.translate: curly quotes and non-breaking spaces as plain ones."""
CODE_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
"""A fenced code block, or one left open to the end."""
QUOTED = re.compile(r'"[^"\n]*"')
"""Text in double quotes on one line: what the answer quotes, not what it says."""

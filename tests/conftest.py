"""Shared pytest setup: make tests/builders.py and the zoo importable from every test folder."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

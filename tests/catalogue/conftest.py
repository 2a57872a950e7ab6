"""Catalogue proofs (one module per F-row) read the session-synthesized dev and prod stacks
from tests/synth.py, shared with tests/infra (registered in tests/conftest.py)."""

"""The synthesized-stack fixtures live in tests/synth.py, registered once for the whole suite
(tests/conftest.py) so tests/infra and tests/catalogue share one synthesis per stage."""

from tests.synth import STAGES, Synthesized

__all__ = ["STAGES", "Synthesized"]

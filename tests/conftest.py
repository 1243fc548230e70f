"""Shared test configuration: property-based tests are deterministic (derandomized, no example
database), so a run reproduces exactly on any machine."""

from hypothesis import settings

settings.register_profile("igbook", derandomize=True, database=None, print_blob=True)
settings.load_profile("igbook")

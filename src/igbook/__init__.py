"""igbook."""

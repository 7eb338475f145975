"""CLI commands beyond validation; each module exposes `register(app)`."""

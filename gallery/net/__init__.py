"""HTTP: the one place clients are built (no environment, our own TLS context, a speed floor)."""

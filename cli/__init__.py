"""The ``gallery`` command line: parses flags, builds the config, calls the library, renders results."""

"""Putting a backend in place: safe extraction into staging, metadata.json, and the journaled
swap with its filesystem operations.

    extract   tar layers into staging, refusing anything unsafe
    metadata  backends/<name>/metadata.json (LocalAI's fields and ours)
    swap      journaled exchange, generations, rollback, removal, crash recovery
    fsops     the swap's filesystem calls, injectable for fault tests
"""

"""The hostile-input corpus: generated cases by category, each with its expected error and exit code.

``test_corpus.py`` runs every case through the real installer; ``counts()`` gives the number of
cases by category, which docs/security.md prints (a test keeps the two in step).
"""

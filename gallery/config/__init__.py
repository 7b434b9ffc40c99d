"""Configuration: the models of the config file, its bounded loading, and the generated reference.

models          Config, GalleryConfig, Limits, Timeouts; ``load_config``
safe_yaml       YAML with caps on size, expanded nodes and depth (configs and indexes)
reference_doc   docs/config-reference.md, generated from the models' field docstrings
"""

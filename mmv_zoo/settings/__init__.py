"""Settings: the `config.mmv_zoo` section of entries (`config.py` and its sections) and the options of
the verbs, as strict pydantic models whose field docstrings are their documentation. Torch-free;
this package's import is kept light (each module is imported where it is used)."""

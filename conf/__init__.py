"""The project's Hydra configs, one source for every number. Installed as ``sersic_runtime.conf``."""

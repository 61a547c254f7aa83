"""The project's Hydra configs, one source for every number. Installed as ``fitnet.conf``."""

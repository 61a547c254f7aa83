"""The GalSim generator of Sersic galaxies: ``python -m simulate`` writes train, val and test
HDF5 splits (docs/contract.md). It imports neither PyTorch nor ``fitnet``."""

from sersic_runtime.files import package_version

__version__ = package_version()

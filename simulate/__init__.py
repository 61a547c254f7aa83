"""GalSim generator of Sersic galaxy stamps for training `fitnet` (docs/guide/simulate.md; the data contract: docs/contract.md)."""

"""GalSim generator of Sersic galaxy stamps for training `fitnet` (see README and SPEC)."""

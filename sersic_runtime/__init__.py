"""The command runtime that ``simulate`` and ``fitnet`` share, below both: the packaged
configs (``configs``), the ``python -m`` command wrapper with its ``--help`` and one-line errors
(``commands``), the errors themselves (``errors``), option checks (``options``) and files
written under a temporary name (``files``). It imports neither torch nor GalSim, so a command's
``--help`` answers at once.
"""

"""The project's Hydra sweepers, where Hydra looks for plugins (the `hydra_plugins`
namespace). Each class here only names one in `interventions.sweeps`, where the code is."""

from interventions.sweeps import adaptive, grid


class GridSweeper(grid.GridSweeper):
    """`hydra/sweeper=grid` (conf/hydra/sweeper/grid.yaml): `interventions.sweeps.grid`."""


class AdaptiveSweeper(adaptive.AdaptiveSweeper):
    """`hydra/sweeper=pareto` (conf/hydra/sweeper/pareto.yaml): `interventions.sweeps.adaptive`."""

"""The study: grids of runs as data, their cost, the analysis (tables, tests, scorecard), reports,
figures and the papermill reproduction."""

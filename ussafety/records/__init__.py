"""Run records: one typed JSON record per run, written and read through this package only."""

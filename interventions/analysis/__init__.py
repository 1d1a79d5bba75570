"""Reading interventions: per-location values, heatmaps, β curves."""

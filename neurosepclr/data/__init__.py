"""Cohort data: MNI template, simulator, BIDS cohort tables, validation and preprocessing."""

"""Training: cached data and random views, balanced batches, the loop, checkpoints and resume."""

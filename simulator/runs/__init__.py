"""Running many episodes: the batch scheduler and branching from a stored prefix."""

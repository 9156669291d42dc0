"""Flow conventions, synthetic flows and Middlebury .flo IO (being written)."""

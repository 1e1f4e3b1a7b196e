"""rover-safety daemon."""

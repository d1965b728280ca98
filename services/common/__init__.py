"""Code shared by two or more driftloop services."""

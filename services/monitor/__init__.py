"""The monitor: the analytics store's writer, drift, performance and A/B statistics."""

"""The trainer: event-triggered, reproducible training on Ray with a blocking evaluation gate."""

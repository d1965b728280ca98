"""The monitor's timer jobs over the live store: drift, performance, experiments."""

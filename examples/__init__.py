"""Example data sets, each with its own simulator (or data), config.yaml and attribution."""

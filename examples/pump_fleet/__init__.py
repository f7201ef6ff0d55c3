"""pump_fleet: a simulated fleet of centrifugal pumps, Clockwork's second example data set."""

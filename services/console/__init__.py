"""The operator's console: one web page over the volume and Redis (services.console.app), on loopback."""

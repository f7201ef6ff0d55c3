"""Clockwork's shared library: config, volume layout, data store, registry, queue, schemas, features."""

"""Operating Forge: the outbox relay, notifications, stamps and callbacks, metrics, service checks, the archive."""

"""The HTTP API: thin. Validate, authenticate, store in PostgreSQL, then enqueue by task name."""

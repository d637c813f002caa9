"""PostgreSQL storage: the ORM models and the engine/session factory."""

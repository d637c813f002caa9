"""Herald's shared core: configuration, storage, crypto, routing, rendering, errors and metrics.

Nothing here imports the api, the workers, the providers, FastAPI or Celery; everyone else imports this.
"""

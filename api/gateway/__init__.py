"""The PushGo-compatible gateway: request validation, lifecycle state and the dispatch transaction."""

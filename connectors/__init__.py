"""One module per external system; each exposes one class satisfying sync_worker.connector.Connector."""

__all__: list[str] = []

"""authserver: an OAuth2 client-credentials token service for sync servers."""

__version__ = "0.1.0"

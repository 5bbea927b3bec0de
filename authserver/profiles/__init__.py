"""Request/response profiles: token-endpoint dialects of sync vendors (see ``base``)."""

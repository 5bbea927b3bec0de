"""Registered trusted backends (OAuth2 confidential clients) and their token policy."""

"""Access tokens: the claim set (RFC 9068) and signing."""

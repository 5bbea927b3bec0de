"""Signing keys: generation, storage interface and the rotation lifecycle."""

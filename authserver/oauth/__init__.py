"""The OAuth 2.0 protocol surface, built on Authlib. The only package importing
``authlib.oauth2``."""

"""RFC 8414 authorization server metadata, also served as OIDC discovery."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc8414 import AuthorizationServerMetadata

from authserver.clients import auth_methods
from authserver.oauth.endpoints import CLIENT_AUTH_METHODS as ENDPOINT_AUTH_METHODS
from authserver.oauth.grants import AuthServerClientCredentialsGrant

ASSERTION_ALGS = list(auth_methods.ASSERTION_ALGS)


def metadata_document(issuer: str) -> dict[str, Any]:
    """Build the metadata document for *issuer* (every URL is based on it, §2)."""
    return {
        "issuer": issuer,
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": list(
            AuthServerClientCredentialsGrant.TOKEN_ENDPOINT_AUTH_METHODS
        ),
        # RFC 8414 §2 makes this REQUIRED, and there is no authorization endpoint: "none"
        # (OAuth 2.0 Multiple Response Type Encoding Practices) is the registered value
        # that promises no credentials from it, so validators that insist on a non-empty
        # list accept the document without it advertising a flow we do not run.
        "response_types_supported": ["none"],
        "token_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": list(ENDPOINT_AUTH_METHODS),
        "introspection_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": list(ENDPOINT_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": ASSERTION_ALGS,
        "service_documentation": f"{issuer}/openapi.json",
        # RFC 9068: what the access tokens are signed with.
        "access_token_signing_alg_values_supported": ["RS256"],
        # draft-ietf-oauth-status-list-17 §9.1: where the list of status lists is.
        "status_list_aggregation_endpoint": f"{issuer}/statuslists",
    }


def validate(issuer: str) -> None:
    """Authlib's RFC 8414 validation of the document served for *issuer*; raises
    ``ValueError``. Run before the document is first served (``web/wellknown.py``) and
    when ``serve`` starts.

    RFC 8414 wants every URL in it to be https. A plain-http issuer reaches here only when
    the settings accepted it (outside production, or with ``AUTHSERVER_ALLOW_HTTP_ISSUER``,
    each with its warning), so such a document is checked as the same document over https:
    the scheme is the one rule left out.
    """
    if issuer.startswith("http://"):
        issuer = "https://" + issuer.removeprefix("http://")
    AuthorizationServerMetadata(metadata_document(issuer)).validate()

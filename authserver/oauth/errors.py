"""Protocol errors authserver adds to Authlib's, and the domain -> OAuth error mapping.

Descriptions are fixed strings: Authlib refuses characters outside RFC 6749's set
(docs/design.md, Authlib item 7), and echoing request input into an error is how injection starts.
"""

from __future__ import annotations

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc6749.errors import InvalidScopeError

from authserver.tokens.model import AudienceNotAllowed
from authserver.tokens.model import ScopeNotAllowed
from authserver.tokens.model import TokenRequestError


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is invalid, missing, unknown, or malformed."""

    error = "invalid_target"
    status_code = 400


class TemporarilyUnavailableError(OAuth2Error):
    """RFC 6749 §4.1.2.1 code, used with 503 when storage or keys are unreachable."""

    error = "temporarily_unavailable"
    status_code = 503


class RequestTooLargeError(OAuth2Error):
    error = "invalid_request"
    status_code = 413


def from_token_request_error(exc: TokenRequestError) -> OAuth2Error:
    description = str(exc)
    if isinstance(exc, AudienceNotAllowed):
        return InvalidTargetError(description)
    if isinstance(exc, ScopeNotAllowed):
        return InvalidScopeError(description)
    return InvalidRequestError(description)


class UnsupportedGrantError(OAuth2Error):
    """RFC 6749 §5.2 ``unsupported_grant_type``, with a description (Authlib's class
    computes one it never sends)."""

    error = "unsupported_grant_type"
    status_code = 400

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


#: The error code of the 429 answered to a failed client authentication once its client id
#: or address has no failures left. RFC 6749 §5.2 defines no code for "too many attempts";
#: ``slow_down`` is the one the IANA OAuth Extensions Error registry lists for the token
#: endpoint response (RFC 8628 §3.5) and says what we mean: back off, then retry (the
#: ``Retry-After`` header says how long). ``temporarily_unavailable`` already means "the
#: server is down" (503); a client must be able to tell "you are throttled" from that.
#: Why a plain-http request was refused, and the two ways to a request that is accepted:
#: Authlib's own "OAuth 2 MUST utilize https." names neither the loopback exception nor
#: the proxy setting (the usual cause behind a TLS-terminating proxy).
INSECURE_TRANSPORT_DESCRIPTION = (
    "https is required: plain http is accepted only on a loopback address (localhost, "
    "127.0.0.1, ::1); behind a TLS-terminating proxy, set AUTHSERVER_PROXY_HOPS so the "
    "proxy's X-Forwarded-Proto is trusted"
)

SLOW_DOWN = "slow_down"
SLOW_DOWN_DESCRIPTION = "too many failed client authentications; retry after the Retry-After delay"


class SlowDownError(OAuth2Error):
    """429 for a failed client authentication over its budget (never for a correct one)."""

    error = SLOW_DOWN
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(SLOW_DOWN_DESCRIPTION)
        # RFC 9110 §10.2.3: delay-seconds, a non-negative integer; never 0 while refused.
        self.retry_after = max(int(retry_after), 1)

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]

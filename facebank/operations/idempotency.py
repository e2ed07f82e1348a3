"""ClientRequestToken, once for every operation that takes one (CreateUser, AssociateFaces,
DisassociateFaces, DeleteUser, the video Start* calls and any future Start*/Create*), in the manner
of Powertools' idempotency utility: a persistence layer (here the ``RequestLedger`` port, SQLite or
DynamoDB), a key (the token, in a scope), a fingerprint of the payload, and the first answer kept.

Rekognition documents it as "If you use the same token with multiple requests, the same response
is returned"; the same token with other parameters is an IdempotentParameterMismatchException.

``run_once`` claims the token in the ledger with the payload's digest *before* the operation runs,
so a request with other parameters is refused before it changes anything, even when both arrive
at once; the first answer recorded is the one every request with the token gets. A failed request
releases its claim; a crash leaves it unanswered, and the retry runs again.

A claim can also carry a **reservation**: a value decided when the token is first claimed, which
every request with the token then sees (the ledger stores it with the digest, opaquely). Start*
reserves the JobId this way, so the job is created under the id the claim decided: concurrent
callers with one token all try to create that one job, the store's conditional create lets one of
them, and the others find it there (``JobExists``) and create, submit and publish nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from facebank.errors import IdempotentParameterMismatchException
from facebank.storage import RequestLedger

# How long a ClientRequestToken's answer is kept (Rekognition does not say; a day covers SDK
# retries and a client's own retry after an outage).
TOKEN_LIFETIME_SECONDS = 24 * 3600

Response = dict
_SEPARATOR = " "  # between the digest (hex) and the reservation in the ledger's digest field


def payload_digest(payload: dict) -> str:
    """The fingerprint of a request's parameters (the token itself left out by the caller)."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """The standing claim of a token: the digest of its parameters, the reservation made with the
    first claim ("" if none), and the answer once one is recorded."""

    digest: str
    reservation: str
    answer: str | None


def claim(ledger: RequestLedger, scope: str, key: str, digest: str, reservation: str = "") -> Claim:
    """Claim ``key`` in ``scope`` for a request with this digest unless a live claim stands; the
    standing claim either way. Raises IdempotentParameterMismatchException for other parameters."""
    fingerprint = f"{digest}{_SEPARATOR}{reservation}" if reservation else digest
    standing, answer = ledger.claim(scope, key, fingerprint, time.time() - TOKEN_LIFETIME_SECONDS)
    standing_digest, _, standing_reservation = standing.partition(_SEPARATOR)
    if standing_digest != digest:
        token = key.rpartition(":")[2]
        raise IdempotentParameterMismatchException(
            f"ClientRequestToken {token} was used with other parameters in an earlier request"
        )
    return Claim(standing_digest, standing_reservation, answer)


def run_once(
    ledger: RequestLedger,
    scope: str,
    key: str,
    payload: dict,
    run: Callable[[str], Response],
    *,
    reservation: str = "",
) -> Response:
    """The answer of the request ``key`` in ``scope``: the recorded one, or ``run(reservation)``'s
    (``reservation`` being the standing claim's), recorded unless another request recorded first."""
    standing = claim(ledger, scope, key, payload_digest(payload), reservation)
    if standing.answer is not None:
        return json.loads(standing.answer)
    try:
        response = run(standing.reservation)
    except Exception:
        ledger.release(scope, key)
        raise
    return json.loads(ledger.answer(scope, key, json.dumps(response)))

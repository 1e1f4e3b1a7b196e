"""API keys and bearer tokens, wire-compatible with Viam: `Authenticate(entity=key id, api-key)` gives a JWT; every
later call carries `authorization: Bearer <token>`.

The config holds only each key's SHA-256; keys are compared in constant time. Tokens are signed with an Ed25519 key
made at start (so a restart revokes them all) and name the key they came from by a digest of its hash, so a key
removed or changed in the config revokes its tokens at the next reload. Failed attempts are rate-limited per peer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from rover_safety.config import ApiKey

from .errors import AuthFailed
from .limits import Buckets

log = logging.getLogger("rover-safety")

CREDENTIALS_TYPE = "api-key"
AUDIENCE = "rover-safety"
FAILURES_PER_SECOND = 0.5  # a peer may fail once every 2 s on average ...
FAILURE_BURST = 5  # ... after 5 quick failures (a user mistyping)
TOKEN_CACHE = 4096  # verified tokens remembered, so a heartbeat does not cost a signature check
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def key_hash(key: str) -> str:
    """The SHA-256 of a key, as the config stores it (64 lowercase hex digits)."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class _Verified:
    entity: str
    key_digest: str
    expires: float | None


class Authenticator:
    """Checks API keys, issues and verifies tokens, and limits failed attempts per peer."""

    def __init__(self, keys: Sequence[ApiKey], token_ttl: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._signing = Ed25519PrivateKey.generate()
        public = self._signing.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._public = self._signing.public_key()
        self._kid = base64.urlsafe_b64encode(public).rstrip(b"=").decode()
        self._issuer = f"rover-safety:{uuid.uuid4()}"  # this run of the daemon
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Verified] = {}
        self.failures = Buckets(FAILURES_PER_SECOND, FAILURE_BURST)
        self.token_ttl = token_ttl
        self._keys: dict[str, str] = {}
        self.replace_keys(keys, token_ttl)

    @property
    def enabled(self) -> bool:
        """True when the config has API keys: then every call but Authenticate needs a token."""
        return bool(self._keys)

    def replace_keys(self, keys: Sequence[ApiKey], token_ttl: float | None) -> list[str]:
        """Take the config's keys (a reload); tokens of keys that were removed or changed stop working at once.

        Returns the ids whose tokens were revoked.
        """
        new = {k.id: k.key_sha256 for k in keys}
        with self._lock:
            revoked = sorted(i for i, h in self._keys.items() if new.get(i) != h)
            self._keys = new
            self.token_ttl = token_ttl
            self._cache.clear()
        return revoked

    def authenticate(self, entity: str, credentials_type: str, payload: str, peer: str) -> str:
        """Check a key and issue a token for it; raise AuthFailed (with the reason for the client) otherwise."""
        wait = self.failures.wait_for(peer)
        if wait > 0:
            raise AuthFailed(f"too many failed attempts from {peer}; try again in {wait:.0f} s", limited=True)
        with self._lock:
            stored = self._keys.get(entity)
        good = hmac.compare_digest(key_hash(payload), stored or _DUMMY_HASH)  # the same work for an unknown id
        if credentials_type != CREDENTIALS_TYPE or stored is None or not good:
            self.failures.take(peer)
            raise AuthFailed("invalid credentials")
        now = self._clock()
        claims: dict[str, object] = {
            "sub": entity, "aud": AUDIENCE, "iss": self._issuer, "iat": int(now), "jti": str(uuid.uuid4()),
            "rpc_creds_type": CREDENTIALS_TYPE, "key": stored[:16],
        }
        if self.token_ttl is not None:
            claims["exp"] = int(now + self.token_ttl)
        return jwt.encode(claims, self._signing, algorithm="EdDSA", headers={"kid": self._kid})

    def verify(self, token: str) -> str:
        """The entity (key id) a token was issued to; raise AuthFailed if it is not a live token of this daemon."""
        with self._lock:
            verified = self._cache.get(token)
        if verified is None:
            try:
                claims = jwt.decode(token, self._public, algorithms=["EdDSA"], audience=AUDIENCE,
                                    issuer=self._issuer, options={"require": ["sub", "iat", "jti", "key"]})
            except jwt.ExpiredSignatureError:
                raise AuthFailed("the token has expired; authenticate again") from None
            except jwt.PyJWTError:
                raise AuthFailed("invalid token; authenticate again") from None
            exp = claims.get("exp")
            verified = _Verified(str(claims["sub"]), str(claims["key"]), float(exp) if exp is not None else None)
            with self._lock:
                if len(self._cache) >= TOKEN_CACHE:
                    self._cache.clear()
                self._cache[token] = verified
        if verified.expires is not None and self._clock() >= verified.expires:
            raise AuthFailed("the token has expired; authenticate again")
        with self._lock:
            current = self._keys.get(verified.entity)
        if current is None or not hmac.compare_digest(current[:16], verified.key_digest):
            raise AuthFailed("the token's key is no longer accepted; authenticate again")
        return verified.entity

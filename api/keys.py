"""Key material: ``<prefix>.<secret>``, the prefix to find the row, a SHA-256 of the secret to check it."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX_BYTES = 6  # 8 url-safe characters
SECRET_BYTES = 32  # 256 bits: a fast hash is enough, nobody guesses it


def new_key() -> tuple[str, str, str]:
    """(full key to show once, prefix to store, hash to store)."""
    prefix = secrets.token_hex(PREFIX_BYTES)[:12]
    secret = secrets.token_urlsafe(SECRET_BYTES)
    return f"{prefix}.{secret}", prefix, hash_secret(secret)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    prefix, dot, secret = key.strip().partition(".")
    if not dot or not prefix or not secret or len(prefix) > 16:
        return None
    return prefix, secret


def secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_secret(secret), stored_hash)

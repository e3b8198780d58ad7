"""Authentication: the token file (:mod:`.tokens`) and the failed-login throttle
(:mod:`.throttle`). Roles and identities are in :mod:`companion_hub.core.acl`.

The ``companion-hub token`` subcommands are in :mod:`.cli` (not imported here, so the
hub can import this package without the configuration module).
"""

from __future__ import annotations

from .throttle import FailedLogins
from .tokens import (
    DEFAULT_KDF,
    TOKEN_PREFIX,
    KdfParams,
    TokenEntry,
    TokenError,
    TokenFileError,
    TokenStore,
    is_valid_client_pattern,
)

__all__ = [
    "DEFAULT_KDF",
    "TOKEN_PREFIX",
    "FailedLogins",
    "KdfParams",
    "TokenEntry",
    "TokenError",
    "TokenFileError",
    "TokenStore",
    "is_valid_client_pattern",
]

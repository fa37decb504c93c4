"""The verified-token cache: a bounded LRU from token string to its verified claims.

A hit costs a dict lookup and two comparisons: no base64, no JSON, no signature. `exp`/`nbf`
are re-checked on every hit, so a cached token still expires on time.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Container
from typing import Any

from authz.errors import TokenError
from authz.identity.claims import check_times
from authz.identity.keys import Key

_Entry = tuple[dict[str, Any], float | None, float | None, Key]


class TokenCache:
    def __init__(self, size: int, leeway: float):
        self.size = size
        self.leeway = leeway
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        # `token in cache.verified`: every token in it passed parse and signature checks
        self.verified: Container[str] = self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> dict[str, Any] | None:
        """The cached claims (a shallow copy), None on a miss; TokenError once expired."""
        entry = self._entries.get(token)
        if entry is None:
            return None
        claims, exp, nbf, _key = entry
        try:
            check_times(exp, nbf, now, self.leeway)
        except TokenError:
            if exp is not None and now >= exp + self.leeway:
                del self._entries[token]  # expired for good; not-yet-valid may become valid
            raise
        self._entries.move_to_end(token)
        return claims.copy()  # put() stored a plain dict: the same as dict(claims)

    def put(
        self, token: str, claims: dict[str, Any], exp: float | None, nbf: float | None, key: Key
    ) -> None:
        if self.size <= 0 or key.removed:  # removed while this token was being verified
            return
        self._entries[token] = (dict(claims), exp, nbf, key)
        self._entries.move_to_end(token)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def purge(self, keys: Collection[Key]) -> int:
        """Forget tokens verified by `keys` (dropped by a JWKS refresh); return how many."""
        ids = {id(k) for k in keys}
        doomed = [t for t, entry in self._entries.items() if id(entry[3]) in ids]
        for token in doomed:
            del self._entries[token]
        return len(doomed)

    def clear(self) -> None:
        self._entries.clear()

"""DPoP at the edge: the proof checks, the resource guard (token, key binding, session lookup,
replay record), its ASGI middleware, and `protect()` for another API (SPEC.md §4, §6.5).

The server's own `/v1/` endpoints and an API under `protect()` share all of it; they differ only
in the session lookup they give the guard (server/dpop/lookup.py).
"""

from server.dpop.guard import Principal
from server.dpop.lookup import SessionLookup, UncheckedSession
from server.dpop.middleware import principal_of
from server.dpop.protect import protect

__all__ = ["Principal", "SessionLookup", "UncheckedSession", "principal_of", "protect"]

"""DPoP at the HTTP edge: one `DPoP` header, verified against the configured URL, then recorded."""

from __future__ import annotations

from starlette.requests import Request

from protocol.dpop import VerifiedDPoPProof, verify_dpop_proof
from protocol.errors import InvalidDPoPProof
from server.clock import Clock
from server.http import header_values
from server.replay import ReplayStore
from server.settings import Settings


class DPoPGuard:
    def __init__(self, *, settings: Settings, replay: ReplayStore, clock: Clock) -> None:
        self._settings = settings
        self._replay = replay
        self._clock = clock

    def verify(
        self, request: Request, *, path: str, access_token: str | None = None
    ) -> VerifiedDPoPProof:
        """All checks of RFC 9449 §4.3 but replay (see `record`)."""
        values = header_values(request, "dpop")
        if not values:
            raise InvalidDPoPProof("a DPoP proof is required")
        if len(values) > 1:
            raise InvalidDPoPProof("exactly one DPoP header is allowed")
        return verify_dpop_proof(
            proof=values[0],
            method=request.method,
            # htu is compared with the configured public URL, never the Host header.
            url=self._settings.endpoint(path),
            now=self._clock.now(),
            max_age=self._settings.dpop_max_age,
            max_future=self._settings.dpop_max_future,
            access_token=access_token,
        )

    async def record(self, proof: VerifiedDPoPProof) -> None:
        await self._replay.record(proof, now=self._clock.now())

    async def verify_and_record(self, request: Request, *, path: str) -> VerifiedDPoPProof:
        proof = self.verify(request, path=path)
        await self.record(proof)
        return proof

"""`GET /metrics`: the Prometheus scrape, for the networks in `metrics_allowed_networks` only.

A security server's counts (failed logins, locked attempts, refused refreshes) tell an attacker
how their attempts fare, so they are not public. A client outside those networks gets the answer
of an unknown path, which does not reveal that the endpoint exists.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from server.http import client_ip
from server.metrics import CONTENT_TYPE, exposition
from server.scrape_gauges import ScrapeTimeGauges, read_outbox_state
from server.services import services
from server.settings import IPNetwork

METRICS_PATH = "/metrics"


def scrape_allowed(address: str, networks: Sequence[IPNetwork]) -> bool:
    """Whether the client address (as the server derives it, trusted proxies included) is in
    one of `networks`. An IPv4 client of a dual-stack socket appears as `::ffff:a.b.c.d`."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in networks)


async def scrape(request: Request) -> Response:
    svc = services(request)
    address = client_ip(request, svc.settings.trusted_proxies)
    if not scrape_allowed(address, svc.settings.metrics_allowed_networks):
        raise HTTPException(status_code=404)
    outbox = await read_outbox_state(svc.database_health, now=svc.clock.now())
    return Response(exposition([ScrapeTimeGauges(outbox)]), media_type=CONTENT_TYPE)

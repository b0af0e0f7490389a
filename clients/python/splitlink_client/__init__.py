"""The splitlink device client: a library (`SplitlinkClient`) and the `splitlink-client` CLI."""

from splitlink_client.client import LoginStarted, SignedIn, SplitlinkClient
from splitlink_client.discovery import ServerMetadata
from splitlink_client.errors import ClientError, LocalError, StateFileError
from splitlink_client.state import DeviceState, PendingLogin, TokenSet, load_state, save_state

__all__ = [
    "ClientError",
    "DeviceState",
    "LocalError",
    "LoginStarted",
    "PendingLogin",
    "ServerMetadata",
    "SignedIn",
    "SplitlinkClient",
    "StateFileError",
    "TokenSet",
    "load_state",
    "save_state",
]

"""splitlink's pure protocol core: encodings, keys, proofs, tokens, secrets and errors.

Nothing here performs I/O, reads a clock or draws randomness: time and random bytes are
arguments. The server and every client build on these functions (SPEC.md §3-§6).
"""

from protocol.access_token import VerifiedAccessToken, issue_access_token, verify_access_token
from protocol.dpop import (
    VerifiedDPoPProof,
    access_token_hash,
    create_dpop_proof,
    normalize_htu,
    verify_dpop_proof,
)
from protocol.email_address import EmailAddress, parse_email_address
from protocol.encoding import b64url_decode, b64url_encode, parse_json_object
from protocol.errors import (
    AttemptState,
    ErrorCode,
    InvalidDPoPProof,
    InvalidEmail,
    InvalidGrant,
    InvalidKey,
    InvalidSignature,
    InvalidToken,
    MalformedInput,
    SplitlinkError,
    UnknownSigningKey,
)
from protocol.keys import (
    SUPPORTED_ALGORITHMS,
    PublicKey,
    SigningKey,
    jwk_thumbprint,
    parse_public_jwk,
)
from protocol.link import LoginLink, build_login_link, parse_login_link
from protocol.split_secret import (
    LoginSecrets,
    keyed_hash,
    new_login_secrets,
    new_opaque_token,
    parse_attempt_id,
    parse_half,
)

__all__ = [
    "SUPPORTED_ALGORITHMS",
    "AttemptState",
    "EmailAddress",
    "ErrorCode",
    "InvalidDPoPProof",
    "InvalidEmail",
    "InvalidGrant",
    "InvalidKey",
    "InvalidSignature",
    "InvalidToken",
    "LoginLink",
    "LoginSecrets",
    "MalformedInput",
    "PublicKey",
    "SigningKey",
    "SplitlinkError",
    "UnknownSigningKey",
    "VerifiedAccessToken",
    "VerifiedDPoPProof",
    "access_token_hash",
    "b64url_decode",
    "b64url_encode",
    "build_login_link",
    "create_dpop_proof",
    "issue_access_token",
    "jwk_thumbprint",
    "keyed_hash",
    "new_login_secrets",
    "new_opaque_token",
    "normalize_htu",
    "parse_attempt_id",
    "parse_email_address",
    "parse_half",
    "parse_json_object",
    "parse_login_link",
    "parse_public_jwk",
    "verify_access_token",
    "verify_dpop_proof",
]

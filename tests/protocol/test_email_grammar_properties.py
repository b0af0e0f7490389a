"""Property tests for the email grammar (SPEC.md §5.1) with the invariants of threats.md D5."""

from __future__ import annotations

import string
import unicodedata

import idna
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from protocol import EmailAddress, ErrorCode, InvalidEmail, parse_email_address

D5_SPECIALS = frozenset('()<>[]:;@\\,"')
REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp"})
ATEXT = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~-"
# Characters from threats.md D1-D8: specials, whitespace and controls, case-mapping and
# full-width confusables, bidi and zero-width format characters.
HOSTILE = (
    '()<>[]:;@\\,". \t\r\n\x00'
    "\u0131\u212a\u017f\u00df\u00e9\uff4d\uff20\uff45\u3002\u202e\u200d\u00a0\u0430\u00fc"
)

local_parts = st.one_of(
    st.text(alphabet=ATEXT + "." + HOSTILE, max_size=70),
    st.builds(
        lambda head, charset, encoding, text, tail: f"{head}=?{charset}?{encoding}?{text}?={tail}",
        st.text(ATEXT, max_size=8),
        st.sampled_from(["utf-8", "UTF-8", "uTf-8", "iso-8859-1", "us-ascii*en", "x"]),
        st.sampled_from(["q", "Q", "b", "B", ""]),
        st.text(ATEXT + ".", max_size=20),
        st.text(ATEXT, max_size=8),
    ),
)
domains = st.text(
    alphabet=string.ascii_letters + string.digits + "-._" + HOSTILE, min_size=0, max_size=70
)
candidates = st.one_of(
    st.emails(),
    st.builds(lambda local, domain: f"{local}@{domain}", local_parts, domains),
    st.builds(lambda local, domain: f"{local}@{domain}", st.text(ATEXT, min_size=1), domains),
    st.text(max_size=300),
)


def assert_d5_invariants(text: str) -> None:
    assert text.count("@") == 1
    local, domain = text.split("@")
    assert local and domain
    assert not any(unicodedata.category(ch) in REFUSED_CATEGORIES for ch in text)
    assert not any(ch.isspace() for ch in text)
    assert not D5_SPECIALS.intersection(local)
    assert len(text) <= 254
    assert len(local) <= 64
    # No RFC 2047 encoded-word that mail software could decode into another address.
    opening = local.find("=?")
    assert opening < 0 or "?=" not in local[opening + 2 :]


@settings(database=None, max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(candidates)
@example("Mike@M\u00fcnchen.DE")
@example("a@example\u3002org")
@example("mike@\uff45xample.org")
@example('"e@attacker.com"@victim.com')
@example("=?utf-8?q?a=40attacker.example?=@victim.example")
@example("alice@example.org(<bob@example.org>")
def test_every_accepted_email_satisfies_the_d5_invariants_and_parse_is_idempotent(
    value: str,
) -> None:
    try:
        email = parse_email_address(value)
    except InvalidEmail as exc:
        assert exc.code == ErrorCode.INVALID_EMAIL
        return
    # The submitted string and the address mail goes to both satisfy D5.
    assert_d5_invariants(value)
    assert_d5_invariants(email.address)
    assert email.address.isascii()
    local, domain = email.address.split("@")
    # The domain is in A-label form and passes IDNA in both directions.
    assert idna.encode(idna.decode(domain), uts46=True, transitional=False).decode() == domain
    assert domain == domain.lower()
    assert email.canonical == f"{local.lower()}@{domain}"
    # Idempotent on its own output: parsing the address (or the canonical form) changes nothing.
    assert parse_email_address(email.address) == email
    assert parse_email_address(email.canonical) == EmailAddress(email.canonical, email.canonical)


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("user@m\u00fcnchen.de", "user@xn--mnchen-3ya.de"),
        ("user@xn--mnchen-3ya.de", "user@xn--mnchen-3ya.de"),
        ("USER@M\u00dcNCHEN.DE", "user@xn--mnchen-3ya.de"),
        ("user@MUNCHEN.de", "user@munchen.de"),
    ],
)
def test_idn_spellings_of_one_domain_share_a_canonical_form(spelling: str, canonical: str) -> None:
    """threats.md D9: U-label and A-label spellings are one account; a different domain is not."""
    assert parse_email_address(spelling).canonical == canonical


@pytest.mark.parametrize(
    "collision",
    [
        "m\u0131ke@example.org",
        "\u212aate@example.org",
        "\u017fam@example.org",
        "\uff4dike@example.org",
    ],
)
def test_unicode_case_mapping_collisions_are_refused_not_folded(collision: str) -> None:
    """threats.md D1: Python folds these into ASCII ('\u212a'.lower() == 'k'); the grammar must
    refuse them so no submitted string can match an account other than its own spelling."""
    with pytest.raises(InvalidEmail):
        parse_email_address(collision)


def test_a_remembered_domain_gives_every_address_the_same_answer_as_a_fresh_one() -> None:
    # The A-label form of recent domains is kept (protocol/email_address.py): a refusal must
    # stay a refusal, each time with its own error, and an accepted domain keeps each address's
    # own local part.
    from protocol.email_address import _mail_domain

    _mail_domain.cache_clear()
    for _ in range(2):
        with pytest.raises(InvalidEmail, match="not a valid host name") as refused:
            parse_email_address("a@exa_mple.com")
        assert refused.value.code is ErrorCode.INVALID_EMAIL
        with pytest.raises(InvalidEmail, match="host name, not an address"):
            parse_email_address("a@10.0.0.1")
        assert parse_email_address("Ann@Bücher.example") == EmailAddress(
            address="Ann@xn--bcher-kva.example", canonical="ann@xn--bcher-kva.example"
        )
        assert parse_email_address("bob@BÜCHER.example").address == "bob@xn--bcher-kva.example"
    assert _mail_domain.cache_info().hits >= 3
    assert _mail_domain.cache_info().maxsize == 1024


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("=?utf-8?q?victim?=@example.org", id="q-lowercase"),
        pytest.param("=?UTF-8?B?dmljdGlt?=@example.org", id="b-uppercase"),
        pytest.param("=?uTf-8?Q?victim?=@example.org", id="mixed-case"),
        pytest.param("=?iso-8859-1?q?victim?=@example.org", id="other-charset"),
        pytest.param("=?utf-8*en?q?victim?=@example.org", id="with-language"),
        pytest.param("=?x?q?a=40attacker.example=3e=00?=@victim.example", id="decodes-to-at"),
        pytest.param("pre=?utf-8?q?x?=post@example.org", id="inside-the-local-part"),
        pytest.param("a.=?utf-8?q?b.c?=.d@example.org", id="across-dots"),
        pytest.param("=??=@example.org", id="empty-parts"),
        pytest.param('"=?utf-8?q?victim?="@example.org', id="quoted"),
    ],
)
def test_an_encoded_word_in_the_local_part_is_refused(address: str) -> None:
    """SPEC.md §5.1 step 5: RFC 2047 §5 allows no encoded-word in an address."""
    with pytest.raises(InvalidEmail) as raised:
        parse_email_address(address)
    assert raised.value.code == ErrorCode.INVALID_EMAIL


@pytest.mark.parametrize(
    "address", ["a=?b@example.org", "a?=b=?c@example.org", "!#$%&'*+/=?^_`{|}~-@example.org"]
)
def test_an_equals_and_question_mark_that_open_no_encoded_word_are_kept(address: str) -> None:
    assert parse_email_address(address).address == address

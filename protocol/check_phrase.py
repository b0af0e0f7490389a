"""The check phrase: four words derived from a device key's thumbprint (SPEC.md §7.5).

The app shows it next to "check your email", and the login mail shows it too, so a person can see
that the mail belongs to the attempt started on the phone in hand. It is derived from the public
JWK thumbprint (RFC 7638) alone, so anyone holding the thumbprint can recompute it: it is a
recognition aid, never a secret, and it proves nothing to the server.

    digest = SHA-256("splitlink/v1/check-phrase:" || jkt)      (jkt as its ASCII base64url text)
    phrase = WORDS[digest[0]] + " " + WORDS[digest[1]] + " " + WORDS[digest[2]] + " "
             + WORDS[digest[3]]

Four words from 256 carry 32 bits: enough that two different keys a person compares almost never
share a phrase (1 in 4 294 967 296), which is all the phrase is for.
"""

from __future__ import annotations

import hashlib

from protocol.encoding import b64url_decode_exact
from protocol.errors import MalformedInput

CHECK_PHRASE_CONTEXT = b"splitlink/v1/check-phrase:"
CHECK_PHRASE_LENGTH = 4

# 256 short, common, concrete English nouns: lower-case ASCII, 3-6 letters, in alphabetical
# order, no two spelled or pronounced alike. The order is part of the protocol: the byte value
# indexes this tuple. Changing it changes every phrase (tests/vectors/check_phrase_words.json).
WORDS: tuple[str, ...] = tuple(
    """
    acorn anchor apple apron arrow attic autumn badge bagel bamboo banjo basket beach beacon beaver
    bell berry bison boat book bottle bread brick bridge brook broom brush bucket butter button
    cabin cactus camel camera candle canoe canyon carpet castle cedar chair chalk cherry chess
    circus cliff clock cloud clover coast cocoa coffee comet cookie copper coral cotton crane crayon
    crown daisy desert donkey dragon drum duck dune eagle easel echo elm ember engine falcon fern
    fiddle field fig finch flag flute forest fossil fox frog galaxy garden garlic gecko ginger globe
    goat grape gravel guitar hammer harbor harp hazel hedge helmet heron hill honey horse igloo
    island ivory ivy jacket jade jaguar jam jelly jigsaw jungle kayak kettle kite kiwi koala ladder
    lagoon lake lamp lemon lentil lily lime lion lizard llama locket lotus magnet mango maple marble
    meadow melon mint mirror mitten monkey moon mosaic moss muffin napkin needle nest nickel noodle
    nutmeg oak oasis ocean olive onion orange orbit orchid otter owl paddle panda paper parrot pasta
    peach peanut pearl pebble pencil piano pickle pigeon pillow pine planet plum pocket pony poppy
    potato puppet quail quartz quilt rabbit radish raisin raven reef ribbon river robin rocket ruby
    saddle salmon sandal scarf seal shell silver sketch sled snail spoon spruce squid stamp star
    stone straw sugar summit swan table taco teapot tiger timber tomato topaz torch towel tower
    tulip tuna tunnel turnip turtle twig valley vase velvet violin waffle wagon walnut walrus wand
    wave whale wheat willow window wolf yacht yak yarn yogurt zebra zipper
    """.split()  # noqa: SIM905 (256 words read better as text)
)
assert len(WORDS) == 256 and len(set(WORDS)) == 256


def check_phrase(jkt: object) -> str:
    """The four-word phrase for a JWK SHA-256 thumbprint (43 characters of base64url)."""
    if not isinstance(jkt, str):
        raise MalformedInput("jkt must be a string")
    b64url_decode_exact(jkt, length=32, field="jkt")
    digest = hashlib.sha256(CHECK_PHRASE_CONTEXT + jkt.encode("ascii")).digest()
    return " ".join(WORDS[b] for b in digest[:CHECK_PHRASE_LENGTH])

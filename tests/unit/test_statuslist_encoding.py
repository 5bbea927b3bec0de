"""The ``lst`` encoding of draft-ietf-oauth-status-list-17 §4.1, against the draft's own
test vectors (§4.1 example and Appendix "Test vectors", 1-bit list of 2^20 entries) and
against an independent decoder (the ``token-status-list`` package)."""

from __future__ import annotations

import base64
import random
import zlib

from token_status_list import BitArray

from authserver.tokens.statuslist import LIST_SIZE
from authserver.tokens.statuslist import encode_list

#: §4.1: status[0..15] = 1 0 0 1 1 1 0 1 1 1 0 0 0 1 0 1 -> bytes 0xB9 0xA3.
SMALL = [0, 3, 4, 5, 7, 8, 9, 13, 15]
#: Test vectors, 1-bit Status List: size 2^20 with these entries INVALID.
LONG = [0, 1993, 25460, 159495, 495669, 554353, 645645, 723232, 854545, 934534, 1000345]
LONG_LST = (
    "eNrt3AENwCAMAEGogklACtKQPg9LugC9k_ACvreiogEAAKkeCQAAAAAAAAAAAAAAAAAAAIBylgQAAAAAAAAAAAAAAAAA"
    "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAXG9IAAAAAAAAAPwsJAAAAAAAAAAAAAAAvhsSAAAAAAAAAAAA7KpLAAAA"
    "AAAAAAAAAAAAAAAAAJsLCQAAAAAAAAAAADjelAAAAAAAAAAAKjDMAQAAAACAZC8L2AEb"
)


def _bytes(lst: str) -> bytes:
    return zlib.decompress(base64.urlsafe_b64decode(lst + "=" * (-len(lst) % 4)))


def test_the_drafts_two_byte_example() -> None:
    lst = encode_list(SMALL, size=16)
    assert lst == "eNrbuRgAAhcBXQ"
    assert _bytes(lst) == b"\xb9\xa3"
    assert "=" not in lst


def test_the_drafts_long_1_bit_vector() -> None:
    lst = encode_list(LONG, size=2**20)
    # Same bytes as the draft's vector (compressed output may differ between zlib builds,
    # so compare what both decompress to), and with the draft's own decoder semantics.
    assert _bytes(lst) == _bytes(LONG_LST)
    decoded = BitArray.load({"bits": 1, "lst": lst})
    assert [i for i in LONG if decoded.get(i) == 1] == LONG
    assert decoded.get(1) == 0


def test_an_independent_decoder_reads_every_bit_back() -> None:
    rng = random.Random(7)
    revoked = set(rng.sample(range(LIST_SIZE), 500))
    decoded = BitArray.load({"bits": 1, "lst": encode_list(revoked)})
    assert len(decoded) == LIST_SIZE
    assert {i for i in range(LIST_SIZE) if decoded.get(i)} == revoked


def test_an_empty_list_is_all_valid_and_small() -> None:
    lst = encode_list([])
    assert len(lst) < 100  # 16 KiB of zeros compress to a few dozen bytes
    assert _bytes(lst) == bytes(LIST_SIZE // 8)

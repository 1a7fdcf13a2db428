"""SPDY/3 header blocks: the dictionary, the capture's blocks decoded in sequence, our
encoder decoded back, and hostile blocks (bombs, wrong dictionary, bad names)."""

from __future__ import annotations

import hashlib
import tracemalloc
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.errors import LimitExceededError, ProtocolError
from hatchway.protocol import spdy_frame as fr
from hatchway.protocol.spdy_header import (
    DICTIONARY,
    FORBIDDEN_REQUEST,
    FORBIDDEN_RESPONSE,
    HeaderCompressor,
    HeaderDecompressor,
    check_forbidden,
    decode_block,
    encode_block,
    split_values,
)

from . import spdy_vectors

BLOCKS = spdy_vectors.load("spdy_header_blocks.txt")
EXEC = spdy_vectors.load("spdy_kubectl_exec.txt")


def sections() -> dict[str, list[spdy_vectors.Record]]:
    out: dict[str, list[spdy_vectors.Record]] = {}
    for rec in BLOCKS:
        out.setdefault(rec.section, []).append(rec)
    return out


def test_dictionary_is_the_spdy3_one():
    assert len(DICTIONARY) == 1423
    assert zlib.adler32(DICTIONARY) == 0xE3C6A7C2
    assert (
        hashlib.sha256(DICTIONARY).hexdigest()
        == "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
    assert DICTIONARY.startswith(bytes.fromhex("000000076f7074696f6e7300000004686561"))
    assert DICTIONARY.endswith(b"charset=utf-8charset=iso-8859-1,utf-,*,enq=0.")


@pytest.mark.parametrize("way", ["C>S", "S>C"])
def test_capture_blocks_decode_in_sequence_with_one_decompressor(way):
    decomp = HeaderDecompressor()
    records = [r for r in spdy_vectors.direction(EXEC, way) if "headers" in r.fields]
    assert records
    for frame, rec in zip(fr.parse_frames(b"".join(r.raw for r in records)), records, strict=True):
        assert decomp.decode(frame.header_block) == rec.fields["headers"]


@pytest.mark.parametrize("name", sorted(set(r.section for r in BLOCKS) - {"uncompressed"}))
def test_reference_blocks_as_decoder_inputs(name):
    decomp = HeaderDecompressor()
    for rec in sections()[name]:
        assert decomp.decode(rec.raw) == rec.fields


def test_uncompressed_reference_block():
    (rec,) = sections()["uncompressed"]
    assert decode_block(rec.raw) == rec.fields
    assert encode_block(rec.fields) == rec.raw


def test_out_of_order_blocks_fail():
    later = sections()["python-fresh"][1].raw
    with pytest.raises(ProtocolError):
        HeaderDecompressor().decode(later)


def test_our_encoder_decodes_back_and_starts_a_zlib_stream():
    comp, decomp = HeaderCompressor(), HeaderDecompressor()
    first = comp.encode({"streamType": "error"})
    # CMF 0x38: deflate with a 2 KiB window; FLG 0xea: level 9, FDICT; the dictionary's id.
    assert first.startswith(bytes.fromhex("38eae3c6a7c2")) and first.endswith(b"\x00\x00\xff\xff")
    assert decomp.decode(first) == {"streamtype": "error"}
    for value in ["stdin", "stdout", "stderr", "resize"]:
        blk = comp.encode({"streamtype": value})
        assert not blk.startswith(first[:2])
        assert decomp.decode(blk) == {"streamtype": value}
    multi = comp.encode({"a": ["1", "2"], "port": "80", "requestid": "0"})
    got = decomp.decode(multi)
    assert got == {"a": "1\x002", "port": "80", "requestid": "0"}
    assert split_values(got["a"]) == ["1", "2"]


def _traced(make):  # type: ignore[no-untyped-def]
    """(object, bytes it allocated and still holds), by tracemalloc, which sees zlib's
    own allocations (CPython gives zlib PyMem_RawMalloc)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        made = make()
        return made, tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def test_a_header_compressor_holds_little_memory():
    """Issue 10, item 6: zlib's default window and memLevel cost 256 KiB per connection
    (each idle SPDY session on the node held that); ours stays under 32 KiB."""

    def make() -> tuple[HeaderCompressor, bytes]:
        comp = HeaderCompressor()
        return comp, comp.encode({"streamtype": "error", "port": "80"})

    (_comp, block), held = _traced(make)
    assert held < 32 * 1024, held
    assert HeaderDecompressor().decode(block) == {"streamtype": "error", "port": "80"}
    # The measurement can fail: zlib's defaults hold eight times the bound.
    _, default = _traced(lambda: zlib.compressobj(9, zlib.DEFLATED, 15, 8, zdict=DICTIONARY))
    assert default > 8 * 32 * 1024, default


def test_our_blocks_inflate_with_a_default_window_inflater():
    """What a peer's inflater does (Go's compress/zlib, Python's: a 32 KiB window)."""
    comp = HeaderCompressor()
    inflater = zlib.decompressobj(15, zdict=DICTIONARY)
    for i in range(50):
        headers = {"streamtype": "stdout", "port": str(i), "x-long": "v" * (i * 97)}
        raw = inflater.decompress(comp.encode(headers))
        assert decode_block(raw) == headers


names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-:", min_size=1, max_size=20)
values = st.text(max_size=40)


@given(st.lists(st.dictionaries(names, values, max_size=10), max_size=6))
def test_block_round_trip(blocks):
    comp, decomp = HeaderCompressor(), HeaderDecompressor()
    for headers in blocks:
        assert decode_block(encode_block(headers)) == headers
        assert decomp.decode(comp.encode(headers)) == headers


@given(st.binary(max_size=100))
def test_random_compressed_input_fails_cleanly(data):
    try:
        HeaderDecompressor(max_block=4096).decode(data)
    except ProtocolError:
        pass


@given(st.binary(max_size=100))
def test_random_raw_block_fails_cleanly(data):
    try:
        decode_block(data, max_headers=8)
    except ProtocolError:
        pass


def raw_pairs(*pairs: tuple[bytes, bytes]) -> bytes:
    out = len(pairs).to_bytes(4, "big")
    for name, value in pairs:
        out += len(name).to_bytes(4, "big") + name + len(value).to_bytes(4, "big") + value
    return out


@pytest.mark.parametrize(
    "raw",
    [
        raw_pairs((b"StreamType", b"error")),
        raw_pairs((b"streamtype", b"error"), (b"streamtype", b"stdin")),
        raw_pairs((b"streamtype", b"error"))[:-1],  # truncated value
        raw_pairs((b"streamtype", b"error")) + b"\x00",  # trailing bytes
        b"\x00\x00\x00",
        b"\x00\x00\x00\x01\xff\xff\xff\xff",  # a name longer than the block
    ],
    ids=["upper-case", "duplicate", "truncated", "trailing", "short", "huge-length"],
)
def test_bad_raw_blocks(raw):
    with pytest.raises(ProtocolError):
        decode_block(raw)
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)
    with pytest.raises(ProtocolError):
        HeaderDecompressor().decode(comp.compress(raw) + comp.flush(zlib.Z_SYNC_FLUSH))


def test_too_many_headers():
    raw = encode_block({f"h{i}": "v" for i in range(65)})
    with pytest.raises(LimitExceededError):
        decode_block(raw, max_headers=64)
    assert len(decode_block(raw, max_headers=65)) == 65


def test_zlib_bomb_stops_at_the_limit():
    bomb = HeaderCompressor().compress(raw_pairs((b"x", bytes(50 << 20))))
    assert len(bomb) < 100_000
    decomp = HeaderDecompressor(max_block=64 * 1024)
    with pytest.raises(LimitExceededError):
        decomp.decode(bomb)


def test_wrong_or_missing_dictionary():
    wrong = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=b"x" * 64)
    with pytest.raises(ProtocolError):
        HeaderDecompressor().decode(wrong.compress(raw_pairs()) + wrong.flush(zlib.Z_SYNC_FLUSH))
    # A stream without FDICT needs no dictionary: accepted, as Go's zlib reader does.
    plain = zlib.compressobj(9)
    assert HeaderDecompressor().decode(plain.compress(raw_pairs()) + plain.flush(2)) == {}


def test_block_that_ends_the_zlib_stream_is_rejected():
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)
    with pytest.raises(ProtocolError):
        HeaderDecompressor().decode(comp.compress(raw_pairs()) + comp.flush(zlib.Z_FINISH) + b"x")


def test_block_not_sync_flushed_is_rejected():
    comp = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, zdict=DICTIONARY)
    partial = comp.compress(raw_pairs((b"streamtype", b"error")))  # no flush: incomplete
    with pytest.raises(ProtocolError):
        HeaderDecompressor().decode(partial)


def test_forbidden_names():
    for name in FORBIDDEN_REQUEST:
        with pytest.raises(ProtocolError):
            check_forbidden([name], FORBIDDEN_REQUEST)
    check_forbidden(["host"], FORBIDDEN_RESPONSE)
    with pytest.raises(ProtocolError):
        check_forbidden(["transfer-encoding"], FORBIDDEN_RESPONSE)


def test_encoder_lower_cases_and_refuses_case_duplicates():
    assert decode_block(encode_block({"StreamType": "x"})) == {"streamtype": "x"}
    with pytest.raises(ValueError):
        encode_block({"A": "1", "a": "2"})

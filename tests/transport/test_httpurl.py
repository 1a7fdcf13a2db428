"""split_url: urllib.parse.urlsplit's answer for every absolute URL it and we accept,
stricter where urlsplit is lax; the Origin a request is sent to."""

from __future__ import annotations

import urllib.parse

import pytest

from hatchway.transport.httpurl import parse_url, split_url

ACCEPTED = [
    "https://127.0.0.1:6443",
    "https://[::1]:6443/x?y#z",
    "https://User@Host.EXAMPLE:1/",
    "https://user:secret@h:2/p",
    "https://h:",
    "https://h:0",
    "http://a.b-c_d~e/p/q%20?a=b&c",
    "https://[2001:db8::1]",
    "https://h/?",
    "https://h?q",
    "HTTPS://H:443/A",
    "https://h:65535/a/b/../c",
]


@pytest.mark.parametrize("url", ACCEPTED)
def test_split_url_agrees_with_urlsplit(url: str) -> None:
    p = urllib.parse.urlsplit(url)
    assert tuple(split_url(url)) == (p.scheme.lower(), p.hostname, p.port, p.path, p.query)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://h:99999", "port"),
        ("https://h:65536", "port"),
        ("https://h:1:2", "port"),
        ("https://h:+1", "port"),
        ("https://h:-1", "port"),
        ("https://h:\uff11", "port"),  # a fullwidth digit: str.isdigit would take it
        ("https://[zz]:1", "IPv6"),
        ("https://[::1", "IPv6"),
        ("https://[::1]x", "port"),
        ("https://a b/", "character"),  # urlsplit keeps the space in the host
        ("https://h\t:1", "character"),  # urlsplit drops the tab silently
        ("https://h\r\nX: y/", "character"),
        (" https://h", "character"),
        ("h:1", "absolute"),
        ("https:/h", "absolute"),
        ("https://h\u00fc/", "host"),
        ("https://h<x>/", "host"),
    ],
)
def test_split_url_refuses(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        split_url(url)


def test_parse_url_origin_drops_userinfo_and_is_ascii() -> None:
    origin = parse_url("https://u:p@[::1]:6443/a?b#frag")
    assert tuple(origin) == ("https", "::1", 6443, "/a?b", "[::1]:6443")
    assert parse_url("http://H.example").host_header == "h.example"
    assert parse_url("https://h:443/").host_header == "h"
    with pytest.raises(ValueError, match="scheme"):
        parse_url("ftp://h/")

"""`WWW-Authenticate` parsing: what a registry's 401 asks for (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from updock.registry.challenge import Challenge, parse_challenge


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="registry"', Challenge("basic")),
        ("basic", Challenge("basic")),
        (
            'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
            'scope="repository:library/alpine:pull"',
            Challenge("bearer", "https://auth.docker.io/token", "registry.docker.io"),
        ),
        (  # unquoted values, spaces around `=` and `,`, any case
            "BEARER Realm = https://a.example/t , Service=svc",
            Challenge("bearer", "https://a.example/t", "svc"),
        ),
        (  # escaped quotes and a comma inside a quoted value
            r'Bearer realm="https://a.example/t?x=\"1\",2",service="s"',
            Challenge("bearer", 'https://a.example/t?x="1",2', "s"),
        ),
        ('Bearer realm="https://a.example/t"', Challenge("bearer", "https://a.example/t", "")),
        ('Bearer service="s"', None),  # no realm: nowhere to get a token
        ('Bearer realm=""', None),
        ('Digest realm="x", nonce="y"', None),
        ('Negotiate abc, Basic realm="r"', None),  # only the first challenge counts
        ("", None),
        ("   ", None),
        (
            'Bearer realm="https://a.example/t",error="invalid_token"',
            Challenge("bearer", "https://a.example/t", ""),
        ),
    ],
)
def test_parse_challenge(header: str, expected: Challenge | None) -> None:
    assert parse_challenge(header) == expected


@given(st.text(max_size=200))
def test_parse_challenge_never_raises(header: str) -> None:
    result = parse_challenge(header)
    assert result is None or result.scheme in ("basic", "bearer")

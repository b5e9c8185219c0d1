"""registries.conf as containers/image reads it: which entry applies to a name, where a tag is
looked up (mirrors, remapped locations), what is blocked or insecure, and which files podman would
refuse. From files in tmp_path; that the check then goes where podman's pull goes is in
tests/integration/test_registry_conf.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from updock.errors import ConfigError
from updock.registry.registries_conf import RegistriesConf, Source

CONF = """
unqualified-search-registries = ["docker.io"]

[[registry]]
location = "insecure.example.com:5000"
insecure = true

[[registry]]
prefix = "mixed.example.com/legacy"
location = "mixed.example.com/legacy"
insecure = true

[[registry]]
location = "mixed.example.com"

[[registry]]
prefix = "*.dev.example.com"
location = "unused.example.com"
insecure = true
"""


def _conf(tmp_path: Path, text: str) -> RegistriesConf:
    path = tmp_path / "registries.conf"
    path.write_text(text)
    return RegistriesConf(path)


@pytest.mark.parametrize(
    ("domain", "repository", "insecure"),
    [
        ("insecure.example.com:5000", "app", True),
        ("insecure.example.com", "app", False),  # the port is part of the location
        ("insecure.example.com:50001", "app", False),
        ("mixed.example.com", "legacy/app", True),  # the longest prefix wins
        ("mixed.example.com", "legacyx/app", False),
        ("mixed.example.com", "app", False),
        ("a.dev.example.com", "app", True),
        ("a.b.dev.example.com:443", "app", True),
        ("dev.example.com", "app", False),
        ("unknown.example.com", "app", False),
    ],
)
def test_insecure_lookup(tmp_path: Path, domain: str, repository: str, insecure: bool) -> None:
    assert _conf(tmp_path, CONF).insecure(domain, repository) is insecure


def test_the_v1_format(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[registries.insecure]\nregistries = ["v1.example.com"]\n'
        '[registries.block]\nregistries = ["bad.example.com", "v1.example.com"]\n'
        '[registries.search]\nregistries = ["docker.io"]\n',
    )
    assert conf.insecure("v1.example.com", "app")
    assert not conf.insecure("bad.example.com", "app")
    assert conf.sources("bad.example.com", "app", "1")[0].blocked_by is not None
    assert conf.sources("v1.example.com", "app", "1")[0].blocked_by is not None
    assert conf.sources("ok.example.com", "app", "1")[0].blocked_by is None


def test_dropins_override_in_name_order(tmp_path: Path) -> None:
    main = tmp_path / "registries.conf"
    main.write_text('[[registry]]\nlocation = "r.example.com"\ninsecure = true\n')
    dropins = tmp_path / "registries.conf.d"
    dropins.mkdir()
    (dropins / "20-secure.conf").write_text('[[registry]]\nlocation = "r.example.com"\n')
    (dropins / "10-other.conf").write_text(
        '[[registry]]\nlocation = "o.example.com"\ninsecure = true\n'
    )
    (dropins / "30-ignored.txt").write_text("not toml [[[")
    conf = RegistriesConf(main, [dropins, tmp_path / "missing.d"])
    assert conf.insecure("r.example.com", "app") is False
    assert conf.insecure("o.example.com", "app") is True


def test_within_one_file_the_first_entry_of_a_prefix_counts(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[[registry]]\nprefix = "r.example.com"\nlocation = "first.example.com"\n'
        '[[registry]]\nprefix = "r.example.com"\nlocation = "second.example.com"\n',
    )
    assert [s.domain for s in conf.sources("r.example.com", "app", "1")] == ["first.example.com"]


def test_missing_file_is_empty(tmp_path: Path) -> None:
    conf = RegistriesConf(tmp_path / "nope.conf")
    assert conf.sources("r.example.com", "app", "1") == [Source("r.example.com", "app", "1")]


# -- where a tag is looked up -------------------------------------------------------------------


def _where(conf: RegistriesConf, name: str) -> list[tuple[str, bool, bool]]:
    """(rewritten name, insecure, mirror) of each place, in order."""
    domain, _, rest = name.partition("/")
    repository, _, tag = rest.rpartition(":")
    return [(s.name, s.insecure, s.mirror) for s in conf.sources(domain, repository, tag)]


def test_a_remapped_prefix_is_looked_up_at_its_location(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[[registry]]\nprefix = "example.com/foo"\n'
        'location = "internal.example.net:5000/bar"\ninsecure = true\n',
    )
    assert _where(conf, "example.com/foo/app:1.2") == [
        ("internal.example.net:5000/bar/app:1.2", True, False)
    ]
    assert _where(conf, "example.com/foo:1") == [("internal.example.net:5000/bar:1", True, False)]
    assert _where(conf, "example.com/foox/app:1") == [("example.com/foox/app:1", False, False)]


def test_mirrors_come_first_in_order_each_with_its_own_insecure(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[[registry]]\nprefix = "docker.io/library"\nlocation = "docker.io/library"\n'
        '[[registry.mirror]]\nlocation = "m1.example.com/hub"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "m2.example.com:5000"\n',
    )
    assert _where(conf, "docker.io/library/alpine:3") == [
        ("m1.example.com/hub/alpine:3", True, True),
        ("m2.example.com:5000/alpine:3", False, True),
        ("docker.io/library/alpine:3", False, False),
    ]


@pytest.mark.parametrize(
    ("settings", "mirrors"),
    [
        ("mirror-by-digest-only = true\n", []),
        ("", ["m-all", "m-tag", "m-any"]),
    ],
)
def test_mirrors_for_digests_only_are_skipped_for_tags(
    tmp_path: Path, settings: str, mirrors: list[str]
) -> None:
    def mirror(name: str, usage: str) -> str:
        line = f'pull-from-mirror = "{usage}"\n' if usage and not settings else ""
        return f'[[registry.mirror]]\nlocation = "{name}.example.com"\n{line}'

    conf = _conf(
        tmp_path,
        f'[[registry]]\nlocation = "r.example.com"\n{settings}'
        + mirror("m-all", "all")
        + mirror("m-digest", "digest-only")
        + mirror("m-tag", "tag-only")
        + mirror("m-any", ""),
    )
    if settings:
        assert [n for n, _, _ in _where(conf, "r.example.com/app:1")] == ["r.example.com/app:1"]
    else:
        assert [n for n, _, _ in _where(conf, "r.example.com/app:1")] == [
            *(f"{m}.example.com/app:1" for m in mirrors),
            "r.example.com/app:1",
        ]


def test_a_wildcard_prefix_without_location_keeps_the_name(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[[registry]]\nprefix = "*.corp.example"\ninsecure = true\n'
        '[[registry.mirror]]\nlocation = "cache.example.net"\n',
    )
    assert _where(conf, "a.corp.example/ns/app:1") == [
        ("cache.example.net/ns/app:1", False, True),
        ("a.corp.example/ns/app:1", True, False),
    ]


def test_a_place_is_blocked_by_the_entry_of_its_own_name(tmp_path: Path) -> None:
    conf = _conf(
        tmp_path,
        '[[registry]]\nlocation = "blocked.example.com"\nblocked = true\n'
        '[[registry.mirror]]\nlocation = "mirror.example.com"\n'
        '[[registry]]\nprefix = "blocked.example.com/team"\nlocation = "r.example.com/team"\n'
        '[[registry]]\nlocation = "r.example.com/team/secret"\nblocked = true\n',
    )
    sources = conf.sources("blocked.example.com", "app", "1")
    assert [(s.name, s.blocked_by is not None) for s in sources] == [
        ("mirror.example.com/app:1", False),  # podman pulls from the mirror
        ("blocked.example.com/app:1", True),
    ]
    blocked = sources[1].blocked_by
    assert blocked is not None
    assert (blocked.prefix, blocked.origin) == ("blocked.example.com", tmp_path / "registries.conf")
    # A remap leads out of the blocked namespace, or into a blocked one.
    assert conf.sources("blocked.example.com", "team/app", "1")[0].blocked_by is None
    secret = conf.sources("blocked.example.com", "team/secret", "1")
    assert [(s.name, s.blocked_by is not None) for s in secret] == [
        ("r.example.com/team/secret:1", True)
    ]


def test_a_rewrite_to_an_invalid_name_is_an_error_naming_the_file(tmp_path: Path) -> None:
    conf = _conf(tmp_path, '[[registry]]\nprefix = "r.example.com/ns"\nlocation = "Not-A-Host"\n')
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path / "registries.conf"))):
        conf.sources("r.example.com", "ns/app", "1")


# -- files podman refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[[registry]\nlocation = 1", "not valid TOML"),
        ("[[registry]]\ninsecure = true\n", "neither prefix nor location"),
        ('registry = "x"\n', "array of tables"),
        ('[[registry]]\nlocation = "r"\ninsecure = "yes"\n', "not a boolean"),
        ('[[registry]]\nlocation = "r"\nblocked = 1\n', "not a boolean"),
        ('[[registry]]\nlocation = "https://r.example.com"\n', "URI schemes"),
        ('[[registry]]\nprefix = "r.example.com/x"\n', "no location"),
        ('[[registry]]\nprefix = "*.example.com/x"\n', "wildcard"),
        ('[[registry]]\nlocation = "r"\n[[registry.mirror]]\ninsecure = true\n', "no location"),
        (
            '[[registry]]\nlocation = "r"\n[[registry.mirror]]\nlocation = "m"\n'
            'pull-from-mirror = "sometimes"\n',
            "unsupported pull-from-mirror",
        ),
        (
            '[[registry]]\nlocation = "r"\nmirror-by-digest-only = true\n'
            '[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"\n',
            "only one may be set",
        ),
        ('[[registry]]\nlocation = "r"\npull-from-mirror = "all"\n', "for mirrors"),
        (
            '[[registry]]\nprefix = "a"\nlocation = "r"\ninsecure = true\n'
            '[[registry]]\nprefix = "b"\nlocation = "r"\n',
            "conflicting 'insecure'",
        ),
        (
            '[[registry]]\nprefix = "a"\nlocation = "r"\nblocked = true\n'
            '[[registry]]\nprefix = "b"\nlocation = "r"\n',
            "conflicting 'blocked'",
        ),
        (
            '[registries.insecure]\nregistries = ["r"]\n[[registry]]\nlocation = "x"\n',
            "mixes the v1 format",
        ),
    ],
)
def test_a_file_podman_refuses_is_an_error_naming_it(
    tmp_path: Path, content: str, expected: str
) -> None:
    path = tmp_path / "registries.conf"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        RegistriesConf(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_a_dropin_in_the_v1_format_is_an_error(tmp_path: Path) -> None:
    dropins = tmp_path / "d"
    dropins.mkdir()
    (dropins / "50-old.conf").write_text('[registries.insecure]\nregistries = ["r"]\n')
    with pytest.raises(ConfigError, match=r"50-old\.conf: a drop-in must be in the v2 format"):
        RegistriesConf(tmp_path / "none.conf", [dropins])

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as hs

from hatchway.api.selectors import (
    label_selector_from_dict,
    parse_field_selector,
    parse_label_selector,
)
from hatchway.api.status import StatusError

LABELS = {"app": "web", "tier": "front", "version": "3"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", True),
        ("app=web", True),
        ("app==web", True),
        ("app!=web", False),
        ("app=db", False),
        ("missing!=x", True),
        ("app in (web,db)", True),
        ("app in (db)", False),
        ("app notin (db, cache)", True),
        ("missing notin (x)", True),
        ("app", True),
        ("!app", False),
        ("!missing", True),
        ("app=web,tier=front", True),
        ("app=web,tier=back", False),
        ("version>2", True),
        ("version<3", False),
        ("  app = web ,  tier  ", True),
        ("example.com/role", False),
    ],
)
def test_matches(text, expected):
    assert parse_label_selector(text).matches(LABELS) is expected


@pytest.mark.parametrize(
    "text",
    [
        "app=web,",
        "=web",
        "app in web",
        "app in (web",
        "app=web)",
        "bad key=1",
        "app=a b",
        "a=-bad-",
        "x>y",
        "app notin",
    ],
)
def test_parse_errors_are_bad_request(text):
    with pytest.raises(StatusError) as info:
        parse_label_selector(text)
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"


def test_string_form():
    sel = parse_label_selector("tier in (b,a), app=web,!x, y")
    assert str(sel) == "app=web,tier in (a,b),!x,y"


def test_from_dict():
    sel = label_selector_from_dict(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["front"]},
                {"key": "gone", "operator": "DoesNotExist"},
            ],
        }
    )
    assert sel.matches(LABELS)
    assert not sel.matches({"app": "web"})
    assert label_selector_from_dict(None).matches({})
    with pytest.raises(StatusError):
        label_selector_from_dict({"matchExpressions": [{"key": "a", "operator": "Near"}]})


_name = hs.from_regex(r"[a-z]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
_req = hs.one_of(
    hs.tuples(_name, hs.sampled_from(["=", "!=", "=="]), _name).map(lambda t: "".join(t)),
    hs.tuples(_name, hs.sampled_from(["in", "notin"]), hs.lists(_name, min_size=1, max_size=3)).map(
        lambda t: f"{t[0]} {t[1]} ({','.join(t[2])})"
    ),
    _name,
    _name.map(lambda n: "!" + n),
)


@given(hs.lists(_req, min_size=1, max_size=5), hs.dictionaries(_name, _name, max_size=5))
def test_round_trip(reqs, labels):
    sel = parse_label_selector(",".join(reqs))
    again = parse_label_selector(str(sel))
    assert str(again) == str(sel)
    assert again.matches(labels) == sel.matches(labels)


def test_field_selectors():
    pod = {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"nodeName": "n1", "hostNetwork": True},
        "status": {"phase": "Running"},
    }
    assert parse_field_selector("metadata.name=p", "pods").matches(pod)
    assert parse_field_selector("metadata.name==p,status.phase!=Pending", "pods").matches(pod)
    assert not parse_field_selector("spec.nodeName=n2", "pods").matches(pod)
    assert parse_field_selector("spec.nodeName!=", "pods").matches(pod)
    assert parse_field_selector("spec.hostNetwork=true", "pods").matches(pod)
    assert parse_field_selector("", "pods").matches(pod)
    assert not parse_field_selector("metadata.namespace=other").matches(pod)
    assert str(parse_field_selector("status.phase!=Running")) == "status.phase!=Running"


def test_field_selector_errors():
    with pytest.raises(StatusError) as info:
        parse_field_selector("spec.bogus=1", "pods")
    assert info.value.message == "field label not supported: spec.bogus"
    with pytest.raises(StatusError) as info:
        parse_field_selector("status.phase", "pods")
    assert info.value.code == 400
    with pytest.raises(StatusError):
        parse_field_selector("spec.nodeName=x", "namespaces")

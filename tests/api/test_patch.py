from __future__ import annotations

import pytest

from hatchway.api.patch import (
    apply_patch,
    json_merge_patch,
    json_patch,
    strategic_merge_patch,
)
from hatchway.api.status import StatusError

# RFC 7386 appendix A, every example
RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]


@pytest.mark.parametrize(("target", "patch", "result"), RFC7386)
def test_rfc7386(target, patch, result):
    assert json_merge_patch(target, patch) == result


def test_merge_patch_does_not_modify_inputs():
    target, patch = {"a": {"b": 1}}, {"a": {"c": 2}}
    json_merge_patch(target, patch)
    assert target == {"a": {"b": 1}} and patch == {"a": {"c": 2}}


def _pod():
    return {
        "metadata": {"name": "p", "labels": {"app": "web"}, "finalizers": ["a"]},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                },
                {"name": "side", "image": "sidecar:1"},
            ],
            "tolerations": [{"key": "x"}],
        },
    }


def test_strategic_merges_containers_by_name():
    out = strategic_merge_patch(
        _pod(),
        {
            "spec": {
                "containers": [
                    {"name": "side", "image": "sidecar:2"},
                    {"name": "new", "image": "n"},
                    {
                        "name": "main",
                        "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    },
                ]
            }
        },
    )
    names = [c["name"] for c in out["spec"]["containers"]]
    assert names == ["main", "side", "new"]
    main = out["spec"]["containers"][0]
    assert main["image"] == "busybox:1"
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert out["spec"]["containers"][1]["image"] == "sidecar:2"


def test_strategic_lists_without_key_are_replaced():
    out = strategic_merge_patch(_pod(), {"spec": {"tolerations": [{"key": "y"}]}})
    assert out["spec"]["tolerations"] == [{"key": "y"}]


def test_strategic_directives():
    pod = _pod()
    out = strategic_merge_patch(
        pod, {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["main"]
    out = strategic_merge_patch(
        pod,
        {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o"}]}},
    )
    assert out["spec"]["containers"] == [{"name": "only", "image": "o"}]
    out = strategic_merge_patch(pod, {"metadata": {"labels": {"$patch": "replace", "x": "y"}}})
    assert out["metadata"]["labels"] == {"x": "y"}
    out = strategic_merge_patch(pod, {"metadata": {"labels": {"$patch": "delete"}}})
    assert "labels" not in out["metadata"]
    out = strategic_merge_patch(pod, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}})
    assert out["metadata"]["finalizers"] == []
    out = strategic_merge_patch(pod, {"metadata": {"finalizers": ["b", "a"]}})
    assert out["metadata"]["finalizers"] == ["a", "b"]
    out = strategic_merge_patch(
        pod,
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "side"}, {"name": "main"}],
                "containers": [{"name": "main", "image": "busybox:2"}],
            }
        },
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["side", "main"]
    assert out["spec"]["containers"][1]["image"] == "busybox:2"
    out = strategic_merge_patch(
        {"spec": {"strategy": {"type": "A", "rollingUpdate": {"x": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "B"}}},
    )
    assert out == {"spec": {"strategy": {"type": "B"}}}


def test_strategic_null_deletes_and_labels_merge():
    out = strategic_merge_patch(
        _pod(), {"metadata": {"labels": {"app": None, "tier": "front"}, "annotations": {"a": "b"}}}
    )
    assert out["metadata"]["labels"] == {"tier": "front"}
    assert out["metadata"]["annotations"] == {"a": "b"}


def test_strategic_errors():
    with pytest.raises(StatusError) as info:
        strategic_merge_patch(_pod(), {"spec": {"containers": [{"image": "no-name"}]}})
    assert info.value.code == 400
    with pytest.raises(StatusError):
        strategic_merge_patch(_pod(), {"metadata": {"$patch": "explode"}})


def test_json_patch():
    doc = {"a": {"b": [1, 2]}, "c": "d"}
    ops = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/c", "value": "e"},
        {"op": "test", "path": "/c", "value": "e"},
        {"op": "copy", "from": "/c", "path": "/f"},
        {"op": "move", "from": "/f", "path": "/g~1h"},
        {"op": "remove", "path": "/a/b/0"},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [9, 2, 3]}, "c": "e", "g/h": "e"}
    assert doc == {"a": {"b": [1, 2]}, "c": "d"}


def test_json_patch_errors():
    with pytest.raises(StatusError) as info:
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert info.value.code == 422
    with pytest.raises(StatusError) as info:
        json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
    assert info.value.code == 422
    with pytest.raises(StatusError) as info:
        json_patch({"a": 1}, {"op": "add"})
    assert info.value.code == 400


def test_apply_patch_by_content_type():
    base = {"metadata": {"labels": {"a": "1"}}}
    merge = {"metadata": {"labels": {"b": "2"}}}
    assert apply_patch("application/merge-patch+json", base, merge)["metadata"]["labels"] == {
        "a": "1",
        "b": "2",
    }
    out = apply_patch("application/strategic-merge-patch+json; charset=utf-8", base, merge)
    assert out["metadata"]["labels"] == {"a": "1", "b": "2"}
    ops = [{"op": "remove", "path": "/metadata/labels/a"}]
    assert apply_patch("application/json-patch+json", base, ops) == {"metadata": {"labels": {}}}
    with pytest.raises(StatusError) as info:
        apply_patch("application/apply-patch+yaml", base, {})
    assert info.value.code == 415

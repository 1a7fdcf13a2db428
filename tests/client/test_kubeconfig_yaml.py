"""The fast kubeconfig reader: what it reads equals yaml.safe_load, and it gives up on
everything else (None), never guessing."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.client import kubeconfig_yaml

KUBECTL_STYLE = """\
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUJj+/=
    server: https://127.0.0.1:6443
    insecure-skip-tls-verify: true
  name: kind-kind
contexts:
- context:
    cluster: kind-kind
    namespace: default
    user: kind-kind
  name: kind-kind
current-context: kind-kind
kind: Config
preferences: {}
users:
- name: kind-kind
  user:
    token: 'abc''def'
    client-key: "/home/me/.kube/key.pem"
    exec: null
"""


def test_kubectl_style_file_reads_as_pyyaml_does():
    doc = kubeconfig_yaml.load(KUBECTL_STYLE)
    assert doc is not None
    assert doc == yaml.safe_load(KUBECTL_STYLE)
    assert doc["users"][0]["user"]["token"] == "abc'def"


def test_safe_dump_output_is_read():
    doc = {
        "apiVersion": "v1",
        "clusters": [{"name": "a", "cluster": {"server": "https://127.0.0.1:1", "x": 3}}],
        "contexts": [],
        "current-context": "",
        "preferences": {},
        "users": [{"name": "u", "user": {"token": "t0k", "list": ["a", "b", None, 7]}}],
    }
    text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
    assert kubeconfig_yaml.load(text) == doc


def test_gives_up_on_what_it_does_not_know():
    for text in [
        "a: &x 1\nb: *x\n",
        "a: |\n  text\n",
        "a: [1, 2]\n",
        "a: yes\n",
        "a: 1.5\n",
        "a: 2001-12-14\n",
        "a: b # comment\n",
        "a: one\n  two\n",
        '"a": 1\n',
        "a: 0x1f\n",
        "--- \na: 1\n",
        "a: !!str 1\n",
        "just a scalar\n",
        "a:\tb\n",
        "a: caf\u00e9\n",
    ]:
        assert kubeconfig_yaml.load(text) is None, text


_TOKENS = st.sampled_from(
    [
        "a", "b-c", "x.y", "on", "yes", "true", "False", "null", "~", "1", "-2", "007",
        "0x1", "1.5", "1:30", "https://h:1/p", "a b", "a: b", "a #c", "'q'", "'it''s'",
        '"d"', '"e\\n"', "{}", "[]", "[a]", "&a", "*a", "!t", "|", ">", "=", "<<", "",
        "LS0t+/=", "a,b", "-", "? x", "%x", "@x", "a:", ":",
    ]
)  # fmt: skip


_KEYS = st.sampled_from(["a", "b", "c-d", "e.f", "g_h", "i/j"])


@st.composite
def _block(draw: st.DrawFn, indent: int, depth: int) -> list[str]:
    """Lines of a mapping or sequence at ``indent``, mostly well formed."""
    pad = " " * indent
    lines: list[str] = []
    as_list = draw(st.booleans()) and indent > 0
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.one_of(_KEYS, _KEYS, _TOKENS))
        head = f"{pad}- " if as_list else pad
        if depth and draw(st.booleans()):
            step = draw(st.sampled_from([2, 2, 0, 4, 1]))
            lines.append(f"{head}{key}:" if not as_list or draw(st.booleans()) else f"{pad}-")
            lines.extend(draw(_block(indent + step if step else indent + 2, depth - 1)))
        else:
            lines.append(
                f"{head}{key}{draw(st.sampled_from([': ', ': ', ':', ' ']))}"
                f"{draw(_TOKENS)}".rstrip()
            )
    return lines


@st.composite
def _documents(draw: st.DrawFn) -> str:
    return "\n".join(draw(_block(0, 3))) + "\n"


@settings(max_examples=3000, deadline=None)
@given(_documents())
def test_never_disagrees_with_pyyaml(text):
    ours = kubeconfig_yaml.load(text)
    if ours is None:
        return
    assert ours == yaml.safe_load(text), text


@settings(max_examples=500, deadline=None)
@given(
    st.recursive(
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(10**6), 10**6),
            st.text("abcxyz-_./:= '#,", max_size=12),
        ),
        lambda inner: st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(st.text("abcxyz-_.", min_size=1, max_size=6), inner, max_size=4),
        ),
        max_leaves=20,
    ).map(lambda v: {"k": v})
)
def test_round_trips_of_safe_dump_agree(doc):
    text = yaml.safe_dump(doc, default_flow_style=False, sort_keys=False)
    ours = kubeconfig_yaml.load(text)
    if ours is not None:
        assert ours == doc, text

"""The exec/attach options query in both of its spellings, sans-I/O: one encoder, one decoder.

The same PodExecOptions / PodAttachOptions travel twice (protocol.md 2.1, 2.2):

* **API server spelling** (:data:`APISERVER`), what kubectl sends to the API server::

      command=echo&command=hi&container=main&stderr=true&stdout=true

  ``command`` repeated in argv order, ``container`` when known, booleans ``stdin``,
  ``stdout``, ``stderr``, ``tty`` only when true, as ``true``. Read with the API server's
  boolean rule (:func:`apiserver_bool`): absent, ``0`` or ``false`` in any case is
  false, anything else -- the empty string too -- is true.
* **kubelet spelling** (:data:`KUBELET`), what the API server forwards to the node (and
  what the legacy ``/proxy/minions/...`` path carries)::

      command=echo&command=hi&error=1&output=1

  ``input``/``output``/``error``/``tty`` = ``1`` when on, no ``container`` (it is a path
  segment there). Read with the kubelet's rule (:func:`kubelet_bool`): only a first
  value of exactly ``1`` is true.

Both encodings are Go's ``url.Values.Encode``: keys sorted (stable, so the commands keep
their order), values form-encoded (space ``+``, ``/`` ``%2F``), which is what kubectl
1.27-1.33 and the Kubernetes API server put on the wire.

Decoding keeps what each reader did before there was one codec: a repeated key counts by
its first value; unknown keys are ignored; ``command`` counts only for ``exec`` (attach
runs nothing); the container comes from the caller (a path segment) when it names one,
else from the query's first ``container``. :func:`spelling_of` is the node's guess when
the caller does not say: the kubelet spelling when ``input``, ``output`` or ``error`` is
present, whatever its value. No normalisation happens here (``tty`` with ``stderr``
stays as sent, so the API server forwards what it was given); the node applies
:meth:`ExecOptions.normalised` itself.

How much a peer can put in a query is bounded before it gets here, by the HTTP layer's
head limit (``HttpLimits.max_head``, 64 KiB on both servers; a longer request line is
answered 431).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from hatchway.types import ExecOptions

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Literal

    Spelling = Literal["apiserver", "kubelet"]

Query = Mapping[str, Sequence[str]]

#: RFC 3986's unreserved bytes: what Go's escaping keeps in a query and in a path.
UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
# Go's url.QueryEscape of each byte: unreserved bytes stay, space is "+", the rest %XX.
_QUERY_ESCAPED = tuple(
    chr(b) if b in UNRESERVED else "+" if b == 0x20 else f"%{b:02X}" for b in range(256)
)

APISERVER: Spelling = "apiserver"
KUBELET: Spelling = "kubelet"

#: The query names of (stdin, stdout, stderr, tty) in each spelling, and the value of "on".
_FLAGS: dict[str, tuple[str, str, str, str]] = {
    APISERVER: ("stdin", "stdout", "stderr", "tty"),
    KUBELET: ("input", "output", "error", "tty"),
}
_ON = {APISERVER: "true", KUBELET: "1"}
#: Keys whose presence marks the kubelet spelling (``tty`` is shared by both).
_KUBELET_ONLY = ("input", "output", "error")


def apiserver_bool(values: Sequence[str] | None) -> bool:
    """The API server's boolean query parsing: absent, ``0`` or ``false`` (any case) is
    false; anything else, including the empty string, is true. First value counts."""
    if not values:
        return False
    first = values[0]
    return not (first == "0" or first.lower() == "false")


def kubelet_bool(values: Sequence[str] | None) -> bool:
    """The kubelet's: true only when the first value is exactly ``1``."""
    return bool(values) and values[0] == "1"


#: Go's ``strconv.ParseBool`` true values.
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def decode_legacy(query: Query, action: str, container: str) -> ExecOptions:
    """The options of the seed's legacy ``/proxy/minions/{node}/exec/...`` path, which
    takes both spellings: a stream is on when its kubelet key is ``1`` (``input=1``) or
    its API server key is true as Go parses a boolean (``stdin=true``, ``stdout=1``). A
    user following the seed writes the API server's; the path is the kubelet's."""
    kubelet = decode(query, action, spelling=KUBELET, container=container)
    ours = [bool(query.get(name)) and query[name][0] in _GO_TRUE for name in _FLAGS[APISERVER]]
    theirs = (kubelet.stdin, kubelet.stdout, kubelet.stderr, kubelet.tty)
    stdin, stdout, stderr, tty = (a or b for a, b in zip(theirs, ours, strict=True))
    return ExecOptions(kubelet.command, container, stdin, stdout, stderr, tty, action=action)


def query_pairs(options: ExecOptions, spelling: Spelling) -> list[tuple[str, str]]:
    """The query of ``options`` as ``(name, value)`` pairs in wire order (keys sorted)."""
    pairs: list[tuple[str, str]] = []
    if options.action == "exec":
        pairs.extend(("command", arg) for arg in options.command)
    if spelling == APISERVER and options.container:
        pairs.append(("container", options.container))
    flags = (options.stdin, options.stdout, options.stderr, options.tty)
    on = _ON[spelling]
    pairs.extend((name, on) for name, wanted in zip(_FLAGS[spelling], flags, strict=True) if wanted)
    pairs.sort(key=lambda pair: pair[0])  # stable: the commands keep their order
    return pairs


def encode(options: ExecOptions, spelling: Spelling) -> str:
    """The query string (without ``?``) of ``options``, byte for byte as Go writes it."""
    return query_string(query_pairs(options, spelling))


def spelling_of(query: Query) -> Spelling:
    """The kubelet spelling when ``input``, ``output`` or ``error`` is present."""
    return KUBELET if any(key in query for key in _KUBELET_ONLY) else APISERVER


def decode(
    query: Query,
    action: str,
    *,
    spelling: Spelling | None = None,
    container: str | None = None,
) -> ExecOptions:
    """The options of an ``action`` (``exec``/``attach``) request from its parsed query
    (``{name: [values...]}``). ``spelling``: detected by :func:`spelling_of` when None.
    ``container``: the path's, which wins over the query's ``container``."""
    spelling = spelling or spelling_of(query)
    is_on = kubelet_bool if spelling == KUBELET else apiserver_bool
    stdin, stdout, stderr, tty = (is_on(query.get(name)) for name in _FLAGS[spelling])
    if container is None:
        container = (query.get("container") or [""])[0]
    return ExecOptions(
        command=tuple(query.get("command", ())) if action == "exec" else (),
        container=container,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        tty=tty,
        action=action,
    )


def query_escape(text: str) -> str:
    """Go's ``url.QueryEscape`` (``urllib.parse.quote_plus``): UTF-8, unreserved bytes
    kept, space as ``+``, every other byte ``%XX``."""
    return "".join([_QUERY_ESCAPED[b] for b in text.encode("utf-8")])


def query_string(pairs: Iterable[tuple[str, str]]) -> str:
    """``name=value`` pairs joined by ``&``, each escaped by :func:`query_escape`: Go's
    ``url.Values.Encode`` for pairs already in order (``urllib.parse.urlencode``)."""
    return "&".join([f"{query_escape(k)}={query_escape(v)}" for k, v in pairs])

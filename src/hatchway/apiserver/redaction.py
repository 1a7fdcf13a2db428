"""Secrets out of exec commands and free text before they reach the audit log.

    redact_command(["mysql", "-uroot", "-phunter2"])   # ["mysql", "-uroot", "-p[REDACTED]"]
    redact_text("curl -u bob:pw https://x")           # "curl -u bob:[REDACTED] https://x"

What is replaced by ``[REDACTED]``, in an argv and inside free text (a ``sh -c`` script,
a header value, a reason):

* the value after a secret-named flag (``--password VALUE``, ``--token VALUE``,
  ``--key VALUE``) and in ``--flag=VALUE``, ``NAME=VALUE`` and ``name: value``;
* a name is secret when it contains ``password``/``passwd``/``pwd``, ``secret``,
  ``token``, ``api-key``/``api_key``/``apikey``, ``credential`` or ``auth``, or when its
  last part (after ``_``, ``-`` or ``.``, or the whole name) is ``key``, ``pass``,
  ``passphrase``, ``passin``, ``passout``, ``session``, ``session-id``/``sessionid``,
  ``session-key``, ``jsessionid``, ``sessid``, ``phpsessid`` or ``cookie``: so
  ``AWS_SECRET_ACCESS_KEY=``, ``STRIPE_KEY=``, ``DB_PASS=``, ``SESSION=``, ``--session``,
  but not ``monkey=`` or ``--keyboard``;
* ``Bearer``/``Basic`` credentials;
* the password of ``user:password``: in ``scheme://user:password@host`` URLs, and
  after ``-u``/``--user``/``--proxy-user`` (separate, ``--user=bob:pw`` or glued
  ``-ubob:pw``), the user name kept;
* short password flags of tools that have them, separate or glued (``-pSECRET``):
  ``-p`` of mysql, mysqldump, mysqladmin and the other ``mysql*`` tools, ``mariadb*``,
  ``sshpass``, ``7z``/``7za``/``7zr``, ``rar``/``unrar``; ``-P`` of ``zip``/``unzip``;
  ``-a`` of ``redis-cli``. They count only after the tool was named, earlier in the argv
  (any argument whose basename is the tool: ``env mysql -pX``, ``/usr/bin/mysql -pX``)
  or earlier in the same text (``sh -c "mysql -pX"``): ``-p`` is a harmless flag of
  ``ls``, ``mkdir`` and many more, so ``mkdir -p /x`` stays as it is.

Over-redaction is accepted where a rule cannot tell (``sort --key 2`` loses its ``2``);
the audit line must never hold the secret.

Every pattern runs on untrusted text, so each is linear: possessive quantifiers,
lookbehinds that start a match only at the start of a run, and the "is it a secret
name?" test done on the matched name rather than by backtracking through it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

__all__ = ["REDACTED", "redact_command", "redact_text"]

REDACTED = "[REDACTED]"

_WORD = re.compile(r"passw(?:or)?d|pwd|secret|token|api[-_]?key|credential|auth", re.I)
_LAST_WORD = re.compile(
    r"(?:^|[_.-])(?:key|pass(?:phrase|in|out)?|j?session(?:[_.-]?(?:id|key))?|(?:php)?sessid"
    r"|cookie)$",
    re.I,
)
#: Short flags that carry a password, per tool (basename) that has them.
_TOOL_FLAGS: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"mysql\w*+|mariadb[\w-]*+|sshpass|7z[ar]?|(?:un)?rar"), frozenset({"-p"})),
    (re.compile(r"(?:un)?zip"), frozenset({"-P"})),
    (re.compile(r"redis-cli"), frozenset({"-a"})),
)
_TOOL_IN_TEXT = re.compile(
    r"(?<![\w.-])(mysql\w*+|mariadb[\w-]*+|sshpass|7z[ar]?|(?:un)?rar|(?:un)?zip|redis-cli)(?![\w.-])"
)
_USER_FLAGS = frozenset({"-u", "--user", "--proxy-user"})
_FLAG_ARG = re.compile(r"-{1,2}[\w.-]++")
_ASSIGNMENT = re.compile(r"(-{0,2}[\w.-]++)=")
_GLUED_USER = re.compile(r"(-u|--(?:proxy-)?user=)(.*)", re.S)
_URL_CREDS = re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]*+://[^/\s:@]*+:)(?:[^@\s]*+@)++", re.I)
_AUTH_SCHEME = re.compile(r"\b(bearer|basic)(\s++)\S++", re.I)
_INLINE_KV = re.compile(r"(?<![\w.-])([\w.-]++)[\"']?\s*+[=:]\s*+")
_INLINE_FLAG = re.compile(r"(?<!\S)(-{1,2}[\w.-]++)\s++")
_INLINE_GLUED = re.compile(r"(?<!\S)(-[a-zA-Z])(?=[^\s-])")
_INLINE_USER = re.compile(r"(?<!\S)(?:-u|--(?:proxy-)?user)(?:=|\s++)?+[\"']?+[^\s:\"']*+:")
_VALUE = re.compile(r"\"[^\"]*+\"|'[^']*+'|\S++")


def _secret_name(name: str) -> bool:
    return bool(_WORD.search(name) or _LAST_WORD.search(name))


def _tool_flags(word: str) -> frozenset[str]:
    """The password flags of the tool named by ``word`` (a path or a bare name)."""
    base = word.rpartition("/")[2]
    for pattern, flags in _TOOL_FLAGS:
        if pattern.fullmatch(base):
            return flags
    return frozenset()


def _redact_values(
    text: str, pattern: re.Pattern[str], is_secret: Callable[[re.Match[str]], bool]
) -> str:
    """Replace the value after each match of ``pattern`` for which ``is_secret`` holds."""
    out: list[str] = []
    pos = 0
    while (m := pattern.search(text, pos)) is not None:
        out.append(text[pos : m.end()])
        pos = m.end()
        if is_secret(m):
            value = _VALUE.match(text, pos)
            if value is not None:
                out.append(REDACTED)
                pos = value.end()
    out.append(text[pos:])
    return "".join(out)


def _short_flag(tool_flags: Collection[str], text: str) -> Callable[[re.Match[str]], bool]:
    """Is the flag a match found in ``text`` a password flag where it stands?"""
    since: dict[str, int] = {}  # flag -> where the first tool that has it is named
    for m in _TOOL_IN_TEXT.finditer(text):
        for flag in _tool_flags(m.group(1)):
            since.setdefault(flag, m.end())

    def check(m: re.Match[str]) -> bool:
        flag = m.group(1)
        return flag in tool_flags or since.get(flag, len(text) + 1) <= m.start()

    return check


def redact_text(text: str, tool_flags: Collection[str] = ()) -> str:
    """Redact credentials inside free text (a shell string, a header value).

    ``tool_flags`` are the short password flags already in force (a tool named earlier
    in the argv); the text's own tool names add theirs from where they appear."""
    text = _URL_CREDS.sub(rf"\1{REDACTED}@", text)
    text = _AUTH_SCHEME.sub(rf"\1\2{REDACTED}", text)
    text = _redact_values(text, _INLINE_USER, lambda m: True)
    # Positions move as values are replaced: each pass looks for the tools afresh.
    text = _redact_values(text, _INLINE_GLUED, _short_flag(tool_flags, text))
    short_flag = _short_flag(tool_flags, text)
    text = _redact_values(text, _INLINE_FLAG, lambda m: _secret_name(m.group(1)) or short_flag(m))
    return _redact_values(text, _INLINE_KV, lambda m: _secret_name(m.group(1)))


@dataclass
class _Context:
    """What the arguments before this one decided."""

    redact_next: bool = False
    user_next: bool = False
    script_next: bool = False
    tool_flags: set[str] = field(default_factory=set)


def _redact_user(value: str) -> str:
    if "://" in value:  # redis-cli -u redis://user:pw@host: a URL, not user:password
        return redact_text(value)
    user, sep, _ = value.partition(":")
    return f"{redact_text(user)}:{REDACTED}" if sep else redact_text(value)


def _redact_arg(arg: str, ctx: _Context) -> str:
    if ctx.redact_next:
        return REDACTED
    if ctx.user_next:
        return _redact_user(arg)
    if arg[:2] in ctx.tool_flags and len(arg) > 2:
        return arg[:2] + REDACTED  # glued: -pSECRET
    glued_user = _GLUED_USER.fullmatch(arg)
    if glued_user and ":" in glued_user.group(2):
        return glued_user.group(1) + _redact_user(glued_user.group(2))
    # A whole argument KEY=VALUE is redacted to its end (env KEY="a b"), but a shell
    # script after -c is free text: "KEY=v cmd" keeps "cmd".
    match = None if ctx.script_next else _ASSIGNMENT.match(arg)
    if match and _secret_name(match.group(1)):
        return f"{match.group(1)}={REDACTED}"
    return redact_text(arg, ctx.tool_flags)


def redact_command(argv: Sequence[str]) -> list[str]:
    """A copy of ``argv`` with secret-looking values replaced by ``[REDACTED]``."""
    out: list[str] = []
    ctx = _Context()
    for raw in argv:
        arg = str(raw)
        out.append(_redact_arg(arg, ctx))
        # Decided for values too: in ["--password", "--token", "x"] both values go.
        is_flag = bool(_FLAG_ARG.fullmatch(arg))
        ctx.redact_next = is_flag and (_secret_name(arg) or arg in ctx.tool_flags)
        ctx.user_next = arg in _USER_FLAGS
        ctx.script_next = arg == "-c"
        ctx.tool_flags |= _tool_flags(arg)
    return out

"""Kubernetes name rules (RFC 1123 labels and subdomains, qualified names, label values)
with upstream's messages; each check returns the list of problems, empty when fine."""

from __future__ import annotations

import re

_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = _LABEL + r"(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_QNAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"


def _regex_error(msg: str, regex: str, *examples: str) -> str:
    """``validation.RegexError``, with its double space before ``or``, as upstream."""
    if not examples:
        return f"{msg} (regex used for validation is '{regex}')"
    text = msg + " (e.g. "
    for i, example in enumerate(examples):
        if i:
            text += " or "
        text += f"'{example}', "
    return text + f"regex used for validation is '{regex}')"


def dns1123_label(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1123 label (namespace and container names)."""
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL, value):
        msg = (
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or"
            " '-', and must start and end with an alphanumeric character"
        )
        errs.append(_regex_error(msg, _LABEL, "my-name", "123-abc"))
    return errs


def dns1123_subdomain(value: str) -> list[str]:
    """Problems with ``value`` as an RFC 1123 subdomain (pod and node names)."""
    errs = []
    if len(value) > 253:
        errs.append("must be no more than 253 characters")
    if not re.fullmatch(_SUBDOMAIN, value):
        msg = (
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters,"
            " '-' or '.', and must start and end with an alphanumeric character"
        )
        errs.append(_regex_error(msg, _SUBDOMAIN, "example.com"))
    return errs


def path_segment_name(value: str) -> list[str]:
    """Problems with ``value`` as a path segment (RBAC object names)."""
    if value in (".", ".."):
        return [f"may not be '{value}'"]
    for bad in ("/", "%"):
        if bad in value:
            return [f"may not contain '{bad}'"]
    return []


def qualified_name(value: str) -> list[str]:
    """Problems with ``value`` as a label or annotation key (``prefix/name``)."""
    prefix, slash, name = value.rpartition("/")
    errs: list[str] = []
    if slash and not prefix:
        errs.append("prefix part must be non-empty")
    elif prefix:
        errs.extend("prefix part " + e for e in dns1123_subdomain(prefix))
    if not name:
        return [*errs, "name part must be non-empty"]
    if len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    if not re.fullmatch(_QNAME, name):
        msg = (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must"
            " start and end with an alphanumeric character"
        )
        errs.append(_regex_error(msg, _QNAME, "MyName", "my.name", "123-abc"))
    return errs


def label_value(value: str) -> list[str]:
    errs = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not re.fullmatch(_LABEL_VALUE, value):
        msg = (
            "a valid label must be an empty string or consist of alphanumeric characters,"
            " '-', '_' or '.', and must start and end with an alphanumeric character"
        )
        errs.append(_regex_error(msg, _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errs

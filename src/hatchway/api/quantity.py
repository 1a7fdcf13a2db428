"""Kubernetes resource quantities (``128Mi``, ``1G``, ``500m``, ``1.5``, ``2e3``), exactly.

The grammar is apimachinery's ``resource.Quantity``: a signed decimal number, then a binary
SI suffix (Ki … Ei), a decimal SI suffix (n, u, m, "", k, M, G, T, P, E) or a decimal
exponent (``e3``, ``E-2``). Values are exact :class:`fractions.Fraction` s; :func:`value`
and :func:`milli_value` round up, as ``Quantity.Value()`` and ``MilliValue()`` do, so a
limit is never made smaller than asked.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from hatchway.errors import HatchwayError

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_QUANTITY = re.compile(
    r"([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE])|[eE]([+-]?[0-9]+))?"
)
# Bounds on what a string may make us compute: no exponent or digit run that would build
# a huge integer (apimachinery keeps 63-bit values and clamps; we refuse).
_MAX_EXPONENT = 64
_MAX_LENGTH = 64

# apimachinery's ErrFormatWrong, word for word.
FORMAT_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)


class QuantityError(HatchwayError, ValueError):
    """A string that is not a Kubernetes quantity."""


def parse(text: str | int | float) -> Fraction:
    """The exact value of a quantity (ints and floats from JSON are accepted as numbers)."""
    if isinstance(text, bool):
        raise QuantityError(FORMAT_ERROR)
    if isinstance(text, int | float):
        if isinstance(text, float) and not math.isfinite(text):
            raise QuantityError(FORMAT_ERROR)
        text = repr(text) if isinstance(text, float) else str(text)
    if not isinstance(text, str) or len(text) > _MAX_LENGTH:
        raise QuantityError(FORMAT_ERROR)
    m = _QUANTITY.fullmatch(text)
    if m is None:
        raise QuantityError(FORMAT_ERROR)
    sign, number, suffix, exponent = m.groups()
    magnitude = Fraction(number if not number.endswith(".") else number[:-1])
    if suffix in _BINARY:
        magnitude *= 1024 ** _BINARY[suffix]
    else:
        power = int(exponent) if exponent is not None else _DECIMAL[suffix or ""]
        if abs(power) > _MAX_EXPONENT:
            raise QuantityError(f"quantity {text!r} is out of range")
        magnitude *= Fraction(10) ** power
    return -magnitude if sign == "-" else magnitude


def value(text: str | int | float) -> int:
    """The quantity as an integer, rounded up (``Quantity.Value``): bytes, counts."""
    return math.ceil(parse(text))


def milli_value(text: str | int | float) -> int:
    """The quantity in thousandths, rounded up (``Quantity.MilliValue``): millicores."""
    return math.ceil(parse(text) * 1000)

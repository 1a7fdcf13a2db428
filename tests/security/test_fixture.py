"""The attacker fixture itself: an edit user who can work in its namespace and no other."""

from __future__ import annotations

import pytest

from security.conftest import Attacker

pytestmark = pytest.mark.runc


def test_attacker_is_edit_in_its_namespace_only(attacker: Attacker) -> None:
    mine = attacker.kubectl("auth", "can-i", "create", "pods")
    assert mine.stdout.strip() == b"yes", mine.stderr
    other = attacker.kubectl("auth", "can-i", "create", "pods", "-n", "default")
    assert other.stdout.strip() == b"no", other.stderr
    namespaces = attacker.kubectl("auth", "can-i", "update", "namespaces")
    assert namespaces.stdout.strip() == b"no", namespaces.stderr

"""``kubectl --as``/``--as-group`` as on Kubernetes, with every bundled kubectl (and, for
exec, both transports): the request runs as the impersonated user, a caller without
the ``impersonate`` verb is refused in Kubernetes' words, ``auth can-i``/``auth whoami``
answer for the impersonated user, exec admission decides for it, and the audit log
names both users."""

from __future__ import annotations

import json
import uuid
from typing import Any

from cluster import Cluster
from interop.support import Kubectl, Pods, Users


def out(result: Any) -> str:
    return result.stdout.decode(errors="replace")


def err(result: Any) -> str:
    return result.stderr.decode(errors="replace")


def last_error(result: Any) -> str:
    """kubectl's final error line (discovery may log its own failures before it)."""
    lines = [line for line in err(result).splitlines() if line.strip()]
    return lines[-1] if lines else ""


def impersonation_refused(caller: str, resource: str, name: str, where: str) -> str:
    return (
        f'Error from server (Forbidden): {resource} "{name}" is forbidden: User "{caller}"'
        f' cannot impersonate resource "{resource}" in API group "" {where}'
    )


def audit_lines(cluster: Cluster) -> list[dict[str, Any]]:
    text = (cluster.data_dir / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_admin_as_bob_runs_as_bob(kubectl: Kubectl) -> None:
    bob = f"bob-{uuid.uuid4().hex[:6]}"
    result = kubectl("--as", bob, "get", "pods")
    assert result.returncode == 1
    assert last_error(result) == (
        f'Error from server (Forbidden): pods is forbidden: User "{bob}" cannot list resource'
        ' "pods" in API group "" in the namespace "default"'
    )
    lines = [x for x in audit_lines(kubectl.cluster) if x.get("impersonated_user")]
    mine = [x for x in lines if x["impersonated_user"]["username"] == bob]
    assert mine, "no audit line names the impersonated user"
    listed = [x for x in mine if x["resource"] == "pods" and x["verb"] == "list"]
    assert listed and all(x["user"] == "admin" for x in listed)
    assert (listed[-1]["decision"], listed[-1]["code"]) == ("deny", 403)
    assert listed[-1]["impersonated_user"]["groups"] == ["system:authenticated"]


def test_admin_as_the_editor_gets_the_editors_rights(kubectl: Kubectl, users: Users) -> None:
    editor = users.names["editor"]
    ok = kubectl("--as", editor, "get", "pods", "-o", "name")
    assert ok.returncode == 0, err(ok)
    refused = kubectl("--as", editor, "get", "namespaces")
    assert refused.returncode == 1
    assert last_error(refused) == (
        f'Error from server (Forbidden): namespaces is forbidden: User "{editor}" cannot list'
        ' resource "namespaces" in API group "" at the cluster scope'
    )


def test_editor_may_not_impersonate_users_or_groups(kubectl: Kubectl, users: Users) -> None:
    editor = users.names["editor"]
    for args, resource, name in (
        (("--as", "admin"), "users", "admin"),
        (("--as", "admin", "--as-group", "system:masters"), "users", "admin"),
    ):
        result = kubectl(*args, "get", "pods", kubeconfig=users.editor)
        assert result.returncode == 1
        assert last_error(result) == impersonation_refused(
            editor, resource, name, "at the cluster scope"
        ), err(result)


def test_editor_may_impersonate_service_accounts_of_its_namespace(
    kubectl: Kubectl, users: Users
) -> None:
    """Kubernetes' edit role has ``impersonate`` on serviceaccounts; the editor is bound
    in ``default`` only."""
    editor = users.names["editor"]
    sa = "system:serviceaccount:default:default"
    mine = kubectl("--as", sa, "auth", "can-i", "create", "pods", kubeconfig=users.editor)
    assert (mine.returncode, out(mine)) == (1, "no\n"), err(mine)
    other = "system:serviceaccount:kube-public:default"
    refused = kubectl("--as", other, "get", "pods", "-n", "kube-public", kubeconfig=users.editor)
    assert refused.returncode == 1
    assert last_error(refused) == (
        f'Error from server (Forbidden): serviceaccounts "default" is forbidden: User'
        f' "{editor}" cannot impersonate resource "serviceaccounts" in API group "" in the'
        ' namespace "kube-public"'
    )


def test_auth_can_i_answers_for_the_impersonated_user(kubectl: Kubectl, users: Users) -> None:
    cases = [
        (("--as", users.names["viewer"]), ("get", "pods"), "yes"),
        (("--as", users.names["viewer"]), ("create", "pods/exec"), "no"),
        (("--as", users.names["editor"]), ("create", "pods/exec"), "yes"),
        (("--as", "someone", "--as-group", "system:masters"), ("*", "*"), "yes"),
        (("--as", "someone"), ("get", "pods"), "no"),
    ]
    for flags, args, answer in cases:
        result = kubectl(*flags, "auth", "can-i", *args)
        assert out(result) == f"{answer}\n", (flags, args, err(result))
        assert result.returncode == (0 if answer == "yes" else 1), (flags, args)


def test_auth_whoami_shows_the_impersonated_user(kubectl: Kubectl) -> None:
    result = kubectl("--as", "bob", "--as-group", "g", "auth", "whoami", "-o", "json")
    assert result.returncode == 0, err(result)
    info = json.loads(result.stdout)["status"]["userInfo"]
    assert (info["username"], info["groups"]) == ("bob", ["g", "system:authenticated"])
    table = kubectl("--as", "bob", "--as-group", "g", "auth", "whoami")
    assert out(table).split("\n")[:3] == [
        "ATTRIBUTE   VALUE",
        "Username    bob",
        "Groups      [g system:authenticated]",
    ], err(table)


def test_whoami_with_uid_and_can_i_list_as_the_viewer(kubectl: Kubectl, users: Users) -> None:
    result = kubectl("--as", "bob", "--as-uid", "42", "auth", "whoami", "-o", "json")
    assert result.returncode == 0, err(result)
    info = json.loads(result.stdout)["status"]["userInfo"]
    assert (info["username"], info["uid"]) == ("bob", "42")
    listed = kubectl("--as", users.names["viewer"], "auth", "can-i", "--list")
    assert listed.returncode == 0, err(listed)
    rows = {line.split()[0]: line for line in out(listed).splitlines()[1:] if line.strip()}
    assert "[get list watch]" in rows["pods"]
    assert "pods/exec" not in rows


def test_exec_as_a_non_admin_identity_is_refused_privileged_pods(
    kubectl_exec: Kubectl, pods: Pods, users: Users
) -> None:
    editor = users.names["editor"]
    ok = kubectl_exec("--as", editor, "exec", pods.simple, "--", "echo", "ok")
    assert (ok.returncode, out(ok)) == (0, "ok\n"), err(ok)
    refused = kubectl_exec("--as", editor, "exec", pods.privileged, "--", "echo", "ok")
    assert refused.returncode == 1
    assert err(refused) == (
        f'Error from server (Forbidden): pods "{pods.privileged}" is forbidden: cannot exec'
        " into or attach to a privileged container\n"
    )
    as_admin = kubectl_exec(
        "--as",
        "admin",
        "--as-group",
        "system:masters",
        "exec",
        pods.privileged,
        "--",
        "echo",
        "ok",
        kubeconfig=users.editor,
    )
    assert as_admin.returncode == 1
    assert last_error(as_admin) == impersonation_refused(
        editor, "users", "admin", "at the cluster scope"
    )
    starts = [
        x
        for x in audit_lines(kubectl_exec.cluster)
        if x["type"] == "session_start" and x["name"] == pods.simple and x.get("impersonated_user")
    ]
    assert starts, "the exec session's audit line does not name the impersonated user"
    assert (starts[-1]["user"], starts[-1]["impersonated_user"]["username"]) == ("admin", editor)

"""The Python client: a kubeconfig context, REST for what the CLI needs, and exec.

    async with Client.from_kubeconfig() as client:
        result = await client.run("mypod", ["date"], check=True)
        process = await client.create_process("mypod", ["sh"], stdin=True, tty=True)
        forwarder = await client.port_forward("mypod", [":8080"])

:class:`SyncClient` is the same, thread-safe and synchronous, for scripts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hatchway.client import exec as exec_module
from hatchway.client import paths
from hatchway.client.kubeconfig import ClientConfig, load_kubeconfig
from hatchway.client.tls_config import ssl_context
from hatchway.rest import RestClient
from hatchway.types import ExecResult

if TYPE_CHECKING:
    from hatchway.client.portforward import PortForwarder

T = TypeVar("T")

RESOURCE_PATHS = {
    "pods": ("/api/v1", True),
    "namespaces": ("/api/v1", False),
    "nodes": ("/api/v1", False),
    "serviceaccounts": ("/api/v1", True),
    "events": ("/api/v1", True),
    "roles": ("/apis/rbac.authorization.k8s.io/v1", True),
    "rolebindings": ("/apis/rbac.authorization.k8s.io/v1", True),
    "clusterroles": ("/apis/rbac.authorization.k8s.io/v1", False),
    "clusterrolebindings": ("/apis/rbac.authorization.k8s.io/v1", False),
    "leases": ("/apis/coordination.k8s.io/v1", True),
}


def resource_path(resource: str, namespace: str | None, name: str | None = None) -> str:
    prefix, namespaced = RESOURCE_PATHS[resource]
    path = prefix
    if namespaced and namespace:
        path += f"/namespaces/{paths.segment('namespace', namespace)}"
    path += f"/{resource}"
    if name:
        path += f"/{paths.segment('resource name', name)}"
    return path


def rest_client(config: ClientConfig, user_agent: str = "hatchway") -> RestClient:
    return RestClient(
        config.server,
        ssl_context=ssl_context(config),
        token=config.token,
        user_agent=user_agent,
        pool=True,
        server_name=config.tls_server_name,
    )


class Client:
    """One API server, one identity, one default namespace."""

    def __init__(self, config: ClientConfig, *, user_agent: str = "hatchway") -> None:
        self.config = config
        self.namespace = config.namespace or "default"
        self.rest = rest_client(config, user_agent)

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, *, context: str | None = None, **kwargs: Any
    ) -> Client:
        return cls(load_kubeconfig(path, context=context), **kwargs)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the pooled connections (nothing else is held between requests)."""
        await self.rest.aclose()

    # -- REST ---------------------------------------------------------------------------
    async def get(self, resource: str, name: str, namespace: str | None = None) -> Any:
        return await self.rest.get(resource_path(resource, namespace or self.namespace, name))

    async def list(
        self,
        resource: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        all_namespaces: bool = False,
    ) -> Any:
        params = {"labelSelector": label_selector} if label_selector else None
        ns = None if all_namespaces else (namespace or self.namespace)
        return await self.rest.get(resource_path(resource, ns), params)

    async def create(
        self, resource: str, body: dict[str, Any], namespace: str | None = None
    ) -> Any:
        ns = body.get("metadata", {}).get("namespace") or namespace or self.namespace
        return await self.rest.create(resource_path(resource, ns), body)

    async def delete(
        self, resource: str, name: str, namespace: str | None = None, *, grace: int | None = None
    ) -> Any:
        params = {"gracePeriodSeconds": str(grace)} if grace is not None else None
        return await self.rest.delete(
            resource_path(resource, namespace or self.namespace, name), params
        )

    async def get_pod(self, name: str, namespace: str | None = None) -> dict[str, Any]:
        pod: dict[str, Any] = await self.get("pods", name, namespace)
        return pod

    def logs(
        self,
        pod: str,
        *,
        container: str = "",
        namespace: str | None = None,
        follow: bool = False,
    ) -> AsyncIterator[bytes]:
        params = {}
        if container:
            params["container"] = container
        if follow:
            params["follow"] = "true"
        path = resource_path("pods", namespace or self.namespace, pod) + "/log"
        return self.rest.stream(path, params)

    # -- exec ---------------------------------------------------------------------------
    async def create_process(
        self,
        pod: str,
        command: Sequence[str],
        *,
        container: str = "",
        namespace: str | None = None,
        stdin: bool = False,
        stdout: bool = True,
        stderr: bool = True,
        tty: bool = False,
        transport: str = "auto",
    ) -> exec_module.RemoteProcess:
        return await exec_module.create_process(
            self.rest,
            namespace or self.namespace,
            pod,
            command,
            container=container,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
            transport=transport,
        )

    async def run(
        self,
        pod: str,
        command: Sequence[str],
        *,
        container: str = "",
        namespace: str | None = None,
        input: bytes | None = None,
        check: bool = False,
        tty: bool = False,
        transport: str = "auto",
    ) -> ExecResult:
        return await exec_module.run(
            self.rest,
            namespace or self.namespace,
            pod,
            command,
            container=container,
            input=input,
            check=check,
            tty=tty,
            transport=transport,
        )

    # -- port-forward -------------------------------------------------------------------
    async def port_forward(
        self,
        pod: str,
        ports: Sequence[str | int],
        *,
        namespace: str | None = None,
        addresses: Sequence[str] = ("127.0.0.1",),
        on_error: Callable[[int, int, str], None] | None = None,
        on_connection: Callable[[int], None] | None = None,
    ) -> PortForwarder:
        """Forward local ports to the pod's: ``ports`` as kubectl takes them
        (``8080``, ``:8080`` for a free local port, ``5000:8080``). The forwarder's
        ``listeners`` say where it listens; ``async with`` it to close it::

            async with await client.port_forward("web", [":8080"]) as forwarder:
                port = forwarder.listeners[0].local
        """
        from hatchway.client import portforward

        mappings = [portforward.parse_mapping(str(p)) for p in ports]
        return await portforward.open_port_forward(
            self.rest,
            namespace or self.namespace,
            pod,
            mappings,
            addresses=addresses,
            on_error=on_error,
            on_connection=on_connection,
        )


class SyncClient:
    """A thread-safe synchronous wrapper: one event loop in a private thread."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, *, context: str | None = None, **kwargs: Any
    ) -> SyncClient:
        return cls(Client.from_kubeconfig(path, context=context, **kwargs))

    @property
    def namespace(self) -> str:
        return self._client.namespace

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout)

    def run(self, pod: str, command: Sequence[str], **kwargs: Any) -> ExecResult:
        return self._call(self._client.run(pod, command, **kwargs))

    def create_process(self, pod: str, command: Sequence[str], **kwargs: Any) -> SyncProcess:
        process = self._call(self._client.create_process(pod, command, **kwargs))
        return SyncProcess(process, self._call)

    def logs(self, pod: str, **kwargs: Any) -> bytes:
        """The whole log (``follow`` is for the asyncio client)."""

        async def collect() -> bytes:
            return b"".join([chunk async for chunk in self._client.logs(pod, **kwargs)])

        return self._call(collect())

    def get(self, resource: str, name: str, namespace: str | None = None) -> Any:
        return self._call(self._client.get(resource, name, namespace))

    def list(self, resource: str, namespace: str | None = None, **kwargs: Any) -> Any:
        return self._call(self._client.list(resource, namespace, **kwargs))

    def create(self, resource: str, body: dict[str, Any], namespace: str | None = None) -> Any:
        return self._call(self._client.create(resource, body, namespace))

    def delete(self, resource: str, name: str, namespace: str | None = None) -> Any:
        return self._call(self._client.delete(resource, name, namespace))

    def close(self) -> None:
        if self._loop.is_running():
            self._call(self._client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SyncProcess:
    """A :class:`~hatchway.client.exec.RemoteProcess` driven from synchronous code (any
    thread): the same methods, blocking."""

    def __init__(self, process: exec_module.RemoteProcess, call: Any) -> None:
        self._process = process
        self._call = call
        self.command = process.command
        self.container = process.container
        self.protocol = process.protocol

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    def write(self, data: bytes) -> None:
        self._call(self._process.stdin.write(data))

    def write_eof(self) -> None:
        self._call(self._process.write_eof())

    def read_stdout(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes of stdout; ``b""`` at EOF."""
        return self._call(self._process.stdout.read(n))

    def read_stderr(self, n: int = 65536) -> bytes:
        return self._call(self._process.stderr.read(n))

    def resize(self, width: int, height: int) -> None:
        self._call(self._process.resize(width, height))

    def wait(self, timeout: float | None = None, *, check: bool = False) -> int:
        """As :meth:`RemoteProcess.wait <hatchway.client.exec.RemoteProcess.wait>`."""
        return self._call(self._process.wait(check=check, timeout=timeout))

    def terminate(self) -> None:
        self._call(_terminate(self._process))

    def close(self) -> None:
        self._call(self._process.close())

    def __enter__(self) -> SyncProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _terminate(process: exec_module.RemoteProcess) -> None:
    process.terminate()

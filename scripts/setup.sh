#!/usr/bin/env bash
# Installs what Hatchway and its tests need on a Debian machine (run as root):
# runc, busybox-static and tini (its tini-static is the exec init mounted into containers)
# etcd-server/etcd-client and haproxy from Debian, and a virtual environment in .venv with the
# package and its test extras. Safe to run again; it skips what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v runc >/dev/null 2>&1 || need+=(runc)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -x /usr/bin/tini-static ] || need+=(tini)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# etcd for the etcd store and its tests (they start their own etcd on free ports).
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need+=(etcd-client)
# HAProxy in front of the API servers of `hatchway up --ha` (and its tests), as
# Kubernetes' HA guides set it up; nsenter (util-linux) starts each component in its
# network namespace.
command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q "${need[@]}" >/dev/null 2>&1 || {
    apt-get update -q >/dev/null 2>&1
    apt-get install -y -q "${need[@]}" >/dev/null
  }
  # Debian's etcd-server enables and starts a system etcd on 2379: nothing here uses it,
  # so leave none running (where the package could start one at all).
  if [[ " ${need[*]} " == *" etcd-server "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now etcd.service >/dev/null 2>&1 || true
    else
      invoke-rc.d etcd stop >/dev/null 2>&1 || true
    fi
  fi
  # Likewise the system haproxy the package starts (hatchway runs its own).
  if [[ " ${need[*]} " == *" haproxy "* ]]; then
    if [ -d /run/systemd/system ]; then
      systemctl disable --now haproxy.service >/dev/null 2>&1 || true
    else
      invoke-rc.d haproxy stop >/dev/null 2>&1 || true
    fi
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
  | grep -v -e '^WARNING: Location' || true
.venv/bin/python -c 'import hatchway, h11, websockets, cryptography, yaml'
# Byte-compile ahead of time: the CLI starts faster, even where PYTHONDONTWRITEBYTECODE
# keeps Python from writing the caches itself.
.venv/bin/python -m compileall -q src .venv/lib/python3*/site-packages >/dev/null 2>&1 || true
echo "setup: ok ($(.venv/bin/python --version), $(runc --version | head -1), $(tini-static --version), etcd $(etcd --version | sed -n 's/^etcd Version: //p'))" >&2

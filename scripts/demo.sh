#!/usr/bin/env bash
# The README's first command: set everything up, start the bundled emulator, create a share,
# mount it with a bounded cache, and work in it with ordinary tools.
#   scripts/demo.sh            run the demo; the mount stays up at $MNT until `scripts/demo.sh stop`
#   scripts/demo.sh stop       unmount (draining the write-back queue) and stop the emulator
# Environment: MNT (default /mnt/fsync-demo), DEMO_DIR (default /var/tmp/fsync-fuse-demo),
# PORT (default 10000), CACHE_SIZE (default 1G).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$here/.venv}"
MNT="${MNT:-/mnt/fsync-demo}"
DEMO_DIR="${DEMO_DIR:-/var/tmp/fsync-fuse-demo}"
PORT="${PORT:-10000}"
CACHE_SIZE="${CACHE_SIZE:-1G}"
share_url="http://127.0.0.1:$PORT/devstoreaccount1/demo"
ff="$venv/bin/fsync-fuse"

if [ "${1:-}" = "stop" ]; then
    mountpoint -q "$MNT" && "$ff" unmount "$MNT"
    [ -f "$DEMO_DIR/emulator.pid" ] && kill "$(cat "$DEMO_DIR/emulator.pid")" 2>/dev/null || true
    rm -f "$DEMO_DIR/emulator.pid"
    echo "demo stopped (emulator data kept in $DEMO_DIR/emulator)"
    exit 0
fi

"$here/scripts/setup.sh"
mkdir -p "$DEMO_DIR" "$MNT"
export NO_PROXY=127.0.0.1,localhost

if ! (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "demo: starting the emulator on 127.0.0.1:$PORT (data in $DEMO_DIR/emulator)"
    nohup "$ff" emulator --host 127.0.0.1 --port "$PORT" --data "$DEMO_DIR/emulator" \
        >"$DEMO_DIR/emulator.log" 2>&1 &
    echo $! >"$DEMO_DIR/emulator.pid"
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
fi

"$venv/bin/python" - "$PORT" <<'PY'
import sys
from azure.core.exceptions import ResourceExistsError
from azure.storage.fileshare import ShareServiceClient
port = sys.argv[1]
key = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
svc = ShareServiceClient.from_connection_string(
    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={key};"
    f"FileEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")
try:
    share = svc.create_share("demo", quota=100)
    print("demo: created share 'demo' (100 GiB quota)")
except ResourceExistsError:
    share = svc.get_share_client("demo")
root = share.get_directory_client("")
try:
    root.create_subdirectory("from-the-cloud")
    share.get_file_client("from-the-cloud/hello.txt").upload_file(b"uploaded with the Azure SDK\n")
except ResourceExistsError:
    pass
PY

if ! mountpoint -q "$MNT"; then
    echo "demo: mounting $share_url at $MNT with a $CACHE_SIZE cache"
    "$ff" mount "$share_url" "$MNT" --cache-size "$CACHE_SIZE" --cache-dir "$DEMO_DIR/cache"
fi
echo "demo: writing a file through the mount and listing the share"
date > "$MNT/written-through-the-mount.txt"
ls -la "$MNT" "$MNT/from-the-cloud"
cat "$MNT/from-the-cloud/hello.txt"
"$venv/bin/python" -c 'import os, sys; p = sys.argv[1]; print(p, "is", os.getxattr(p, "user.fsync.state").decode())' "$MNT/from-the-cloud/hello.txt"
echo "demo: the share is mounted at $MNT; stop with: scripts/demo.sh stop"

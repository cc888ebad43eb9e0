#!/bin/sh
# Install hal0 as a system service on a Debian/Ubuntu box with systemd, or upgrade it in place.
#
#   sh install.sh --pyz hal0.pyz [options]          or piped:
#   curl -fsSL URL/install.sh | HAL0_PYZ=URL sudo -E sh
#
# Options (environment variable for piped use in brackets):
#   --pyz FILE|URL        the hal0.pyz to install [HAL0_PYZ]
#   --port N              the API port of a new install (default 8080) [HAL0_PORT]
#   --llama-server PATH   use this llama-server binary [HAL0_LLAMA_SERVER]; without it, hal0 installs
#                         the build for this box (hal0 backend install llama-server)
#   --flavor F            that build: auto (default), cpu, vulkan, cuda or rocm [HAL0_LLAMA_FLAVOR]
#   --no-engines          do not install the voice/image engines the slots need [HAL0_NO_ENGINES=1]
#   --no-models           do not pull the slots' default models [HAL0_NO_MODELS=1]
#   --no-start            install, but do not start the service [HAL0_NO_START=1]
#   --worker              install hal0-worker.service (llama.cpp's rpc-server for other boxes'
#                         slots, docs/multi-box.md) instead of the API server [HAL0_WORKER=1]
#   --worker-args ARGS    its arguments, kept in /etc/hal0/worker.env, e.g.
#                         "--host 192.168.1.20 --allow 192.168.1.10/32" [HAL0_WORKER_ARGS]
#   --uninstall [--purge] remove the service, the command and the pyz; --purge also removes
#                         /etc/hal0, /var/lib/hal0 and the hal0 user
#   --yes                 accepted for scripts that pass it: the installer never asks anything
#   --help
#
# A second run upgrades in place: config, tokens, slot overrides and models stay, the service
# restarts on the new version. A pyz that does not run changes nothing.
set -eu

PYZ=${HAL0_PYZ:-}
PORT=${HAL0_PORT:-}
LLAMA=${HAL0_LLAMA_SERVER:-}
FLAVOR=${HAL0_LLAMA_FLAVOR:-auto}
NO_ENGINES=${HAL0_NO_ENGINES:-}
NO_MODELS=${HAL0_NO_MODELS:-}
NO_START=${HAL0_NO_START:-}
WORKER=${HAL0_WORKER:-}
WORKER_ARGS=${HAL0_WORKER_ARGS:-}
UNINSTALL=
PURGE=
PREFIX=/opt/hal0
BIN=/usr/local/bin/hal0
UNIT=/etc/systemd/system/hal0.service
WORKER_UNIT=/etc/systemd/system/hal0-worker.service

say() { printf 'hal0: %s\n' "$*"; }
die() { printf 'hal0: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,24s/^# \{0,1\}//p' "$0" 2>/dev/null || true; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case $1 in
    --pyz) PYZ=${2:?--pyz needs a file or URL}; shift ;;
    --port) PORT=${2:?--port needs a number}; shift ;;
    --llama-server) LLAMA=${2:?--llama-server needs a path}; shift ;;
    --flavor) FLAVOR=${2:?--flavor needs auto, cpu, vulkan, cuda or rocm}; shift ;;
    --no-engines) NO_ENGINES=1 ;;
    --no-models) NO_MODELS=1 ;;
    --no-start) NO_START=1 ;;
    --worker) WORKER=1 ;;
    --worker-args) WORKER_ARGS=${2?--worker-args needs the arguments of hal0 worker}; shift ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    --yes|-y) ;;
    --help|-h) usage 0 ;;
    *) printf 'hal0: unknown option %s\n' "$1" >&2; usage 2 ;;
  esac
  shift
done

[ "$(uname -s)" = Linux ] || die "hal0 runs on Linux, not $(uname -s)"
[ "$(id -u)" = 0 ] || die "run as root: sudo sh install.sh ... (or curl ... | sudo -E sh)"

if [ -n "$UNINSTALL" ]; then
  for unit in "$UNIT" "$WORKER_UNIT"; do
    if [ -f "$unit" ]; then
      systemctl disable --now "$(basename "$unit")" >/dev/null 2>&1 || true
      rm -f "$unit"
      systemctl daemon-reload
    fi
  done
  rm -f "$BIN"
  rm -rf "$PREFIX"
  if [ -n "$PURGE" ]; then
    rm -rf /etc/hal0 /var/lib/hal0
    if id hal0 >/dev/null 2>&1; then userdel hal0; fi
    say "removed hal0, its configuration, models and user"
  else
    say "removed hal0; /etc/hal0 and /var/lib/hal0 stay (--uninstall --purge removes them)"
  fi
  exit 0
fi

case $(uname -m) in
  x86_64|aarch64) ;;
  *) die "hal0 is built for x86_64 and aarch64, not $(uname -m)" ;;
esac
command -v python3 >/dev/null 2>&1 || die "python3 is missing: apt-get install python3"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "hal0 needs Python 3.11 or newer, this is $(python3 -V 2>&1): upgrade the distribution's python3"
command -v useradd >/dev/null 2>&1 || die "useradd is missing (hal0 runs as its own user): apt-get install passwd"
[ -d /run/systemd/system ] ||
  die "systemd is not running here: run hal0 without it as 'python3 hal0.pyz init && python3 hal0.pyz serve'"
[ -n "$PYZ" ] || die "say which hal0.pyz to install: --pyz FILE|URL (or HAL0_PYZ=...)"
free_kb=$(df -Pk / | awk 'NR == 2 {print $4}')
[ "$free_kb" -gt 1048576 ] || die "less than 1 GB free on /: free some space first"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case $PYZ in
  http://*|https://*) say "downloading $PYZ"; curl -fsSL -o "$tmp/hal0.pyz" "$PYZ" || die "cannot download $PYZ" ;;
  *) [ -f "$PYZ" ] || die "$PYZ does not exist"; cp "$PYZ" "$tmp/hal0.pyz" ;;
esac
version=$(SHIV_ROOT="$tmp/shiv" python3 "$tmp/hal0.pyz" version 2>/dev/null | awk '{print $2}') ||
  die "$PYZ does not run with $(python3 -V 2>&1); nothing was changed"
[ -n "$version" ] || die "$PYZ does not run with $(python3 -V 2>&1); nothing was changed"

upgrade=
if [ -f "$UNIT" ]; then upgrade=1; fi
if [ -z "$upgrade" ] && [ -z "$WORKER" ] && [ -n "${PORT:-}" ]; then
  python3 -c "import socket,sys; s=socket.socket(); s.bind(('0.0.0.0', int(sys.argv[1])))" "$PORT" 2>/dev/null ||
    die "port $PORT is in use: choose another with --port"
fi

say "installing hal0 $version"
mkdir -p "$PREFIX/versions/$version"
cp "$tmp/hal0.pyz" "$PREFIX/versions/$version/hal0.pyz.new"
chmod 755 "$PREFIX/versions/$version/hal0.pyz.new"
mv "$PREFIX/versions/$version/hal0.pyz.new" "$PREFIX/versions/$version/hal0.pyz"
ln -sfn "versions/$version" "$PREFIX/current.new"
mv -T "$PREFIX/current.new" "$PREFIX/current"  # the switch: one rename
ln -sfn "$PREFIX/current/hal0.pyz" "$BIN"

if ! id hal0 >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/hal0 --no-create-home --shell /usr/sbin/nologin hal0
fi
for group in render video; do
  if getent group "$group" >/dev/null; then usermod -aG "$group" hal0; fi
done

"$BIN" init --system  # never overwrites: an upgrade keeps config, tokens and slots
if [ -n "${PORT:-}" ] && [ -z "$upgrade" ]; then
  sed -i "s/^port = 8080$/port = $PORT/" /etc/hal0/hal0.toml
fi
port=$(sed -n 's/^port = \([0-9]*\)$/\1/p' /etc/hal0/hal0.toml | head -n 1)

providers=$(for slot in /etc/hal0/slots/*.toml; do
  if grep -q '^enabled = true' "$slot"; then sed -n 's/^provider = "\(.*\)"$/\1/p' "$slot"; fi
done | sort -u)
# llama-server: the operator's (checked and recorded), else the build for this box, unless they
# brought their own on an earlier run
llama_bin=$(sed -n '/^\[providers\.llama-server\]/,/^\[/s/^bin = "\(.*\)"$/\1/p' /etc/hal0/hal0.toml)
case $llama_bin in ''|/var/lib/hal0/backends/llama-server/*) ours=1 ;; *) ours= ;; esac
if [ -n "$LLAMA" ]; then
  "$BIN" backend install --system llama-server --bin "$LLAMA" --flavor "$FLAVOR" ||
    die "$LLAMA cannot serve on this box (see above)"
elif [ -n "$ours" ] && printf '%s\n' "$providers" | grep -qx llama-server; then
  "$BIN" backend install --system llama-server --flavor "$FLAVOR" ||
    die "llama-server could not be installed (see above): fix that and run this again, or bring one: --llama-server PATH"
fi

if [ -n "$WORKER" ]; then
  # A worker box: rpc-server beside [providers.llama-server].bin (installed or --llama-server), no API server.
  if [ -n "$WORKER_ARGS" ] || [ ! -f /etc/hal0/worker.env ]; then
    printf '# Arguments of hal0 worker (docs/multi-box.md); restart hal0-worker after a change.\n' \
      > /etc/hal0/worker.env.new
    printf 'HAL0_WORKER_ARGS=%s\n' "$WORKER_ARGS" >> /etc/hal0/worker.env.new
    mv /etc/hal0/worker.env.new /etc/hal0/worker.env
  fi
  mkdir -p /var/lib/hal0
  chown -R hal0:hal0 /etc/hal0 /var/lib/hal0
  "$BIN" unit --worker > "$WORKER_UNIT.new"
  mv "$WORKER_UNIT.new" "$WORKER_UNIT"
  systemctl daemon-reload
  systemctl enable hal0-worker >/dev/null 2>&1
  if [ -n "$NO_START" ]; then
    say "installed; start it with: systemctl start hal0-worker"
    exit 0
  fi
  systemctl restart hal0-worker
  sleep 2
  systemctl is-active --quiet hal0-worker || die "hal0-worker did not start: journalctl -u hal0-worker -n 50"
  say "hal0 worker $version is running with: $(sed -n 's/^HAL0_WORKER_ARGS=//p' /etc/hal0/worker.env)"
  say "use it from a slot on another box: rpc = [\"THIS-ADDRESS:PORT\"] (docs/multi-box.md)"
  exit 0
fi
if [ -z "$NO_ENGINES" ]; then
  for provider in $providers; do
    case $provider in
      whisper|moonshine|kokoro|comfyui) "$BIN" backend install --system "$provider" ;;
    esac
  done
fi
if [ -z "$NO_MODELS" ]; then "$BIN" init --system --pull; fi
mkdir -p /var/lib/hal0
chown -R hal0:hal0 /etc/hal0 /var/lib/hal0

"$BIN" unit > "$UNIT.new"
mv "$UNIT.new" "$UNIT"
systemctl daemon-reload
systemctl enable hal0 >/dev/null 2>&1
if [ -n "$NO_START" ]; then
  say "installed; start it with: systemctl start hal0"
  exit 0
fi
systemctl restart hal0  # Type=notify: returns once hal0 listens (or has failed)
i=0
until curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; do
  i=$((i + 1))
  [ $i -lt 60 ] || die "hal0 did not answer on port $port: journalctl -u hal0 -n 50"
  sleep 1
done
say "hal0 $version is running: http://$(hostname):$port/v1"
say "admin token: /etc/hal0/admin.token (hal0 token create NAME makes more)"
say "try: curl -H \"Authorization: Bearer \$(sudo cat /etc/hal0/admin.token)\" http://127.0.0.1:$port/v1/models"
say "check the box any time: sudo hal0 doctor --system"

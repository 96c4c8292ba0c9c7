#!/usr/bin/env bash
# The packaged service, as an operator meets it (issue 13), on this machine, as root:
#   build the .deb, install it, and as the installed `pushmirror` user run keygen, check and a
#   push to a local HTTP receiver (`pushmirror receive`); root's push then follows the ownership
#   rule (refuses, names the command, leaves no root-owned state); the daemon, as the service
#   user, still triggers the rate-limited mirror; `systemd-analyze verify` on the installed unit;
#   `dpkg -P` leaves no /var/lib/pushmirror but keeps the sender's key. Also the first hour's
#   stumbles (issue 22): a root-owned secret named by check, a bare `-c pushmirror.yaml`, root's
#   `push --dry-run`, `status --check --url` as nobody, journald priorities, the package's
#   one-line description. The machine is left as found:
#   the package purged, the service user (which this script found absent) removed, temp files gone.
# A run killed before its cleanup (SIGKILL, a CI timeout) leaves the package and the user behind,
# and the next run refuses to start; clean up with: dpkg -P pushmirror; deluser --system pushmirror
# Usage: dist/ci-deb.sh [PACKAGE.deb]   (from .ci/run after the tests; needs root; without a
# package it builds one with dist/build-deb.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
# Files this script writes for the service user to read (archive, mirror files) must be readable
# whatever root's umask is.
umask 022

fail() { echo "ci-deb: FAILED: $*" >&2; exit 1; }
step() { echo "ci-deb: $*" >&2; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i)"
if dpkg -s pushmirror >/dev/null 2>&1 || getent passwd pushmirror >/dev/null || [ -e /etc/pushmirror ] ||
  [ -e /var/lib/pushmirror ]; then
  fail "this machine already has pushmirror (package, user or directories); not touching it"
fi
for tool in setpriv pkill systemd-analyze dpkg adduser deluser; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done

work="$(mktemp -d /tmp/pushmirror-ci-deb.XXXXXX)"
pids=()
cleanup() {
  local status=$?
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if dpkg -s pushmirror >/dev/null 2>&1; then dpkg -P pushmirror >/dev/null 2>&1 || true; fi
  pkill -KILL -u pushmirror 2>/dev/null || true
  if getent passwd pushmirror >/dev/null; then deluser --system --quiet pushmirror >/dev/null 2>&1 || true; fi
  if getent group pushmirror >/dev/null; then delgroup --system --quiet pushmirror >/dev/null 2>&1 || true; fi
  # What the purge keeps on purpose (the sender's key, mirror files): this script made it.
  rm -rf /etc/pushmirror
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
chmod 0755 "$work"
# setpriv execs the command as the service user (runuser would stay in between as its parent and
# not pass SIGTERM on).
as_service() { setpriv --reuid=pushmirror --regid=pushmirror --init-groups -- "$@"; }

deb="${1:-}"
if [ -z "$deb" ]; then
  step "building the package"
  bash dist/build-deb.sh >&2
  deb="$(ls -t target/debian/pushmirror_*.deb | head -n1)"
fi

step "installing $deb"
dpkg -i "$deb" >&2
[ "$(command -v pushmirror)" = /usr/bin/pushmirror ] || fail "pushmirror on PATH is $(command -v pushmirror), not the package's"
[ "$(stat -c %U /var/lib/pushmirror)" = pushmirror ] || fail "/var/lib/pushmirror is not the service user's"
[ "$(stat -c %U:%a /etc/pushmirror/keys)" = pushmirror:700 ] || fail "/etc/pushmirror/keys is not pushmirror's, 0700"
synopsis="$(dpkg-query -W -f='${binary:Summary}' pushmirror)"
[ "${#synopsis}" -le 80 ] || fail "the one-line description is ${#synopsis} characters (dpkg -l cuts at 80): $synopsis"

step "systemd-analyze verify"
unit="$(dpkg -L pushmirror | grep '/pushmirror.service$')"
systemd-analyze verify "$unit" >&2 || fail "systemd-analyze verify $unit"
grep -q '^RestartPreventExitStatus=2$' "$unit" || fail "the unit restarts on configuration errors"

step "keygen as the service user"
as_service pushmirror keygen > "$work/authorized_keys_line"
[ "$(stat -c %U:%a /etc/pushmirror/keys/id_ed25519)" = pushmirror:600 ] || fail "the key is not pushmirror's, 0600"

step "a local HTTP receiver: pushmirror receive, its sync command appends to $work/synced"
mkdir -p "$work/receive/secrets" "$work/archive/project/trace"
token="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
printf '%s\n' "$token" > "$work/receive/secrets/token"
chmod 0600 "$work/receive/secrets/token"
cat > "$work/receive/receive.yaml" <<YAML
listen: 127.0.0.1:0
state_dir: state
archives:
  debian:
    command: ["/bin/sh", "-c", "echo \"\$PUSHMIRROR_SERIAL\" >> $work/synced"]
    timeout: 1m
    bearer_token_file: secrets/token
YAML
pushmirror -v receive "$work/receive/receive.yaml" > /dev/null 2> "$work/receive.log" &
pids+=($!)
for _ in $(seq 100); do
  port="$(sed -n 's/.*addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/receive.log" | head -n1)"
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "receive did not start: $(cat "$work/receive.log")"

step "configuring /etc/pushmirror for the archive in $work/archive"
echo "Archive serial: 2026112901" > "$work/archive/project/trace/master"
cat > /etc/pushmirror/pushmirror.yaml <<YAML
identity: keys/id_ed25519
known_hosts: /var/lib/pushmirror/known_hosts
mirrors_dir: mirrors.d
state_dir: /var/lib/pushmirror
archives:
  debian:
    root: $work/archive
    settle: 1s
    poll: 1s
status:
  listen: 127.0.0.1:0
YAML
install -d -o pushmirror -g pushmirror -m 0700 /etc/pushmirror/mirrors.d/secrets
# Root's secret first: check (as root) must name it, with the chown the daemon needs.
install -o root -g root -m 0600 "$work/receive/secrets/token" /etc/pushmirror/mirrors.d/secrets/token
for name in local limited; do
  limit=""
  [ "$name" = limited ] && limit="rate_limit: 2/1h"
  cat > "/etc/pushmirror/mirrors.d/$name.yaml" <<YAML
http:
  url: "http://127.0.0.1:$port/trigger/debian?serial={serial}"
  token_file: secrets/token
retries: 1
$limit
YAML
done

step "check, as root, names the secret the service user cannot read"
set +e
pushmirror check > /dev/null 2> "$work/check.err"
status=$?
set -e
cat "$work/check.err" >&2
[ "$status" = 2 ] || fail "check passed with a root-owned secret"
grep -q "token_file: /etc/pushmirror/mirrors.d/secrets/token is owned by root, but the service user pushmirror" "$work/check.err" ||
  fail "check does not name the root-owned secret"
grep -q "chown pushmirror:pushmirror /etc/pushmirror/mirrors.d/secrets/token" "$work/check.err" ||
  fail "check does not say the chown"
chown pushmirror:pushmirror /etc/pushmirror/mirrors.d/secrets/token

step "a bare -c pushmirror.yaml resolves a relative state_dir against its directory"
rel="$work/relative"
install -d -o pushmirror -g pushmirror "$rel" "$rel/mirrors.d"
printf 'state_dir: state\nmirrors_dir: mirrors.d\narchives:\n  debian:\n    root: %s\n' "$work/archive" > "$rel/pushmirror.yaml"
chown pushmirror:pushmirror "$rel/pushmirror.yaml"
(cd "$rel" && as_service pushmirror -c pushmirror.yaml check) >&2 || fail "check -c pushmirror.yaml, state_dir: state"

step "check and push as the service user"
as_service pushmirror check >&2 || fail "check as pushmirror"
as_service pushmirror push debian >&2 || fail "push as pushmirror"
for _ in $(seq 100); do [ "$(grep -c 2026112901 "$work/synced" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
[ "$(grep -c 2026112901 "$work/synced")" = 2 ] || fail "the receiver did not sync twice: $(cat "$work/synced")"

step "push --dry-run writes nothing: root may run it"
pushmirror push --dry-run debian >&2 || fail "root's push --dry-run"

step "under journald (JOURNAL_STREAM), log lines carry their priority"
printf 'http:\n  url: "http://127.0.0.1:9/"\nretries: 0\n' > /etc/pushmirror/mirrors.d/down.yaml
set +e
JOURNAL_STREAM=8:12345 as_service pushmirror push debian --only down > /dev/null 2> "$work/journal.err"
set -e
grep -q '^<4> WARN .*trigger failed' "$work/journal.err" || fail "no <4> priority prefix: $(cat "$work/journal.err")"
rm /etc/pushmirror/mirrors.d/down.yaml

step "push as root follows the ownership rule"
set +e
pushmirror push debian > "$work/root.out" 2> "$work/root.err"
status=$?
set -e
cat "$work/root.err" >&2
[ "$status" = 2 ] || fail "root's push exited $status, not 2"
grep -q "sudo -u pushmirror pushmirror -c /etc/pushmirror/pushmirror.yaml push debian" "$work/root.err" ||
  fail "root's push does not say what to run instead"
foreign="$(find /var/lib/pushmirror /etc/pushmirror/keys ! -user pushmirror)"
[ -z "$foreign" ] || fail "files not owned by pushmirror: $foreign"
pushmirror check >&2 || fail "check as root, after root's push"

step "the daemon, as the service user, triggers the rate-limited mirror"
setpriv --reuid=pushmirror --regid=pushmirror --init-groups -- pushmirror -v daemon --grace 5s \
  > /dev/null 2> "$work/daemon.log" &
pids+=($!)
# The first start records the current version; a new one is then pushed to both mirrors.
for _ in $(seq 300); do grep -q "first start: recording" "$work/daemon.log" && break; sleep 0.1; done
grep -q "first start: recording" "$work/daemon.log" || fail "the daemon did not start: $(cat "$work/daemon.log")"
echo "Archive serial: 2026112902" > "$work/archive/project/trace/master"
for _ in $(seq 300); do [ "$(grep -c 2026112902 "$work/synced" 2>/dev/null)" = 2 ] && break; sleep 0.1; done
[ "$(grep -c 2026112902 "$work/synced" 2>/dev/null)" = 2 ] ||
  fail "the daemon did not trigger both mirrors: $(cat "$work/daemon.log")"
as_service pushmirror status > "$work/status.txt"
cat "$work/status.txt" >&2
grep -Eq '^limited +http +ok ' "$work/status.txt" || fail "the limited mirror's state is not ok"
as_service pushmirror status --check >&2 || fail "status --check after the daemon's push"
sport="$(sed -n 's/.*status server listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$work/daemon.log" | head -n1)"
[ -n "$sport" ] || fail "no status server address in the daemon's log"
setpriv --reuid=nobody --regid=nogroup --clear-groups -- pushmirror status --check --url "http://127.0.0.1:$sport" >&2 ||
  fail "status --check --url as nobody (no configuration, no secret)"
kill "${pids[1]}"
wait "${pids[1]}" || fail "the daemon did not stop cleanly on SIGTERM: $(cat "$work/daemon.log")"
unset 'pids[1]'


step "purge keeps the sender's key and the mirror files"
dpkg -P pushmirror 2> "$work/purge.err" >&2
cat "$work/purge.err" >&2
[ ! -e /var/lib/pushmirror ] || fail "purge left /var/lib/pushmirror"
[ -e /etc/pushmirror/keys/id_ed25519 ] || fail "purge removed the sender's key, which downstreams trust"
[ -e /etc/pushmirror/mirrors.d/local.yaml ] || fail "purge removed the mirror files"
grep -q "purge kept /etc/pushmirror/keys" "$work/purge.err" || fail "purge did not say what it kept"
step "ok"

#!/bin/bash
# Regenerates the ftpsync trace fixtures in this directory by running the
# REAL Debian ftpsync for a two-tier mirror chain on loopback:
#
#   primary tree --rsyncd module "debian"--> tier1 (ftpsync, tier1.example.net)
#   tier1 tree   --rsyncd module "debian"--> tier2 (ftpsync, tier2.example.net)
#
# What it does, step by step (everything lives in one mktemp dir under /tmp):
#   1. builds a tiny Debian-like "primary" tree: a .deb and a .dsc under pool/,
#      dists/bookworm/{Release,InRelease}, main/binary-{amd64,arm64}/Packages.gz,
#      main/source/Sources.gz, and project/trace/master laid out like dak's
#      write_project_trace1 (config/debian/common) writes it, with
#      "Archive serial: 2026112901" and a fixed date;
#   2. starts two unprivileged `rsync --daemon --no-detach` instances on free
#      127.0.0.1 ports (picked at runtime, retried if taken), each with a module
#      "debian": one serves the primary tree, the other serves tier1's tree;
#   3. runs /usr/bin/ftpsync as `ftpsync -T cron sync:archive:tier1` (HOME points
#      into the temp dir, so it reads ~/.config/ftpsync/ftpsync-tier1.conf) with
#      MIRRORNAME=TRACEHOST=tier1.example.net, RSYNC_HOST=primary.example.net;
#   4. runs `ftpsync sync:archive:tier2` the same way against tier1's module,
#      with MIRRORNAME=TRACEHOST=tier2.example.net, RSYNC_HOST=tier1.example.net;
#   5. copies the trace files out:
#        primary/master                 the master trace fed to the primary
#        tier1/master                   tier1's project/trace/master (synced)
#        tier1/tier1.example.net        tier1's own trace (written by ftpsync)
#        tier1/_hierarchy               tier1's project/trace/_hierarchy
#        tier2/master                   tier2's project/trace/master (synced)
#        tier2/tier1.example.net        tier1's trace as synced to tier2
#        tier2/tier2.example.net        tier2's own trace (written by ftpsync)
#        tier2/_hierarchy               tier2's project/trace/_hierarchy
#   6. a trap stops both rsync daemons (by pid) and removes the temp dir
#      (set KEEP=1 to keep it for inspection).
#
# ftpsync settings that are not defaults, and why:
#   - RSYNC_SOURCE=rsync://127.0.0.1:PORT/debian: ftpsync builds its source as
#     RSYNC_HOST::RSYNC_PATH and has no port setting; RSYNC_SOURCE (read by
#     ftpsync, not in ftpsync.conf(5)) replaces that source, while the traces and
#     _hierarchy still name ${RSYNC_HOST}, so RSYNC_HOST can be the upstream's
#     name (primary.example.net / tier1.example.net) without DNS for it.
#   - RSYNC_BW=32 (KiB/s) with a 96 KiB .deb: makes stage1 take ~3 s, so that
#     "Total time spent in rsync" is non-zero and "Average rate:" is written
#     every time (ftpsync omits that line when the total time is 0 s).
#   - MIRRORNAME, TRACEHOST: default to `hostname -f`.
#   - LOGDIR, BASEDIR, TO: inside the temp dir.  MAILTO is set (ftpsync demands
#     it, defaulting to $LOGNAME) and mailf() is overridden in the config file
#     so nothing is ever handed to /usr/sbin/sendmail (ftpsync mails only on
#     errors; make.sh fails then anyway and prints the logs).
#   - ARCH_INCLUDE/ARCH_EXCLUDE unset, HUB=false (no runmirrors), ftpsync run
#     under `env -i` so no SSH_ORIGINAL_COMMAND or RSYNC_* leaks in.
#   - tier1 sets INFO_MAINTAINER/SPONSOR/COUNTRY/LOCATION/THROUGHPUT and runs with
#     -T cron (as ftpsync-cron would); tier2 sets none and has no -T, so the
#     fixtures show the optional fields both present and absent.
#
# The committed files were produced on Debian 12 by ftpsync 20180513+nmu1
# (package ftpsync 20180513+nmu1, /usr/bin/ftpsync) and rsync 3.2.7
# (package 3.2.7-1+deb12u5, protocol 31).  They are the real, unedited output of
# this script: do not edit them by hand; rerun this script instead.  Dates,
# durations, byte counts and rates change on every run.
#
# Usage: tests/data/ftpsync/make.sh     (no root needed; needs ftpsync, rsync)

set -euo pipefail

OUT=$(cd "$(dirname "$0")" && pwd)
FTPSYNC=/usr/bin/ftpsync
RSYNC=/usr/bin/rsync
SERIAL=2026112901

for f in "$FTPSYNC" "$RSYNC"; do
    [[ -x $f ]] || { echo "make.sh: $f not found" >&2; exit 1; }
done
FTPSYNC_VERSION=$(sed -n 's/^VERSION="\(.*\)"$/\1/p' "$FTPSYNC")
RSYNC_VERSION=$("$RSYNC" --version | sed -n '1s/^rsync *version \([^ ]*\).*/\1/p')
echo "make.sh: ftpsync ${FTPSYNC_VERSION}, rsync ${RSYNC_VERSION}"
if [[ $FTPSYNC_VERSION != 20180513+nmu1 || $RSYNC_VERSION != 3.2.7 ]]; then
    echo "make.sh: warning: the committed files came from ftpsync 20180513+nmu1 and rsync 3.2.7" >&2
fi

WORK=$(mktemp -d /tmp/ftpsync-traces.XXXXXX)
DAEMON_PIDS=()

cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${DAEMON_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 ]]; then
        echo "make.sh: failed (rc=$rc); logs:" >&2
        find "$WORK/log" -type f -size +0 2>/dev/null | sort | while read -r f; do
            echo "==> $f" >&2
            cat "$f" >&2
        done
    fi
    if [[ ${KEEP:-} == 1 ]]; then
        echo "make.sh: kept $WORK" >&2
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$WORK/log" "$WORK/home/.config/ftpsync"

########################################################################
# 1. The primary tree
########################################################################
P="$WORK/primary"
mkdir -p "$P/pool/main/h/hello" \
         "$P/dists/bookworm/main/binary-amd64" \
         "$P/dists/bookworm/main/binary-arm64" \
         "$P/dists/bookworm/main/source" \
         "$P/project/trace"

# 96 KiB of deterministic bytes standing in for a .deb
head -c 98304 < <(yes 'pushmirror ftpsync fixture') > "$P/pool/main/h/hello/hello_2.10-3_amd64.deb"
cat > "$P/pool/main/h/hello/hello_2.10-3.dsc" <<'EOF'
Format: 3.0 (quilt)
Source: hello
Binary: hello
Architecture: any
Version: 2.10-3
EOF
cat > "$WORK/Packages" <<'EOF'
Package: hello
Version: 2.10-3
Architecture: amd64
Filename: pool/main/h/hello/hello_2.10-3_amd64.deb
Size: 98304
EOF
gzip -9n < "$WORK/Packages" > "$P/dists/bookworm/main/binary-amd64/Packages.gz"
sed 's/amd64/arm64/g' "$WORK/Packages" | gzip -9n > "$P/dists/bookworm/main/binary-arm64/Packages.gz"
printf 'Package: hello\nBinary: hello\nVersion: 2.10-3\nDirectory: pool/main/h/hello\n' |
    gzip -9n > "$P/dists/bookworm/main/source/Sources.gz"
cat > "$P/dists/bookworm/Release" <<'EOF'
Origin: Debian
Label: Debian
Suite: stable
Codename: bookworm
Date: Sun, 29 Nov 2026 08:40:12 UTC
Architectures: all amd64 arm64
Components: main
EOF
cp "$P/dists/bookworm/Release" "$P/dists/bookworm/InRelease"

# project/trace/master as dak's write_project_trace1 writes it (dak
# config/debian/common: date -u, Creator, Running on host, Archive serial,
# Date, Architectures = `dak admin a list` (incl. "all") + " source").  On the
# real primary "master" is a symlink to ftp-master.debian.org and dak also
# writes _hierarchy and _hierarchy.mirror; this primary has only "master", so
# tier1's _hierarchy starts with tier1's own line.
cat > "$P/project/trace/master" <<EOF
Sun Nov 29 08:52:03 UTC 2026
Creator: dak g1d539f9
Running on host: primary.example.net
Archive serial: ${SERIAL}
Date: Sun, 29 Nov 2026 08:52:03 +0000
Architectures: all amd64 arm64 source
EOF

########################################################################
# 2. rsync daemons on free loopback ports
########################################################################
# start_daemon NAME TREE -> sets PORT; the daemon's pid goes to DAEMON_PIDS
start_daemon() {
    local name=$1 tree=$2 conf="$WORK/rsyncd-$1.conf" try pid i
    for try in $(seq 1 20); do
        PORT=$((20000 + RANDOM % 40000))
        cat > "$conf" <<EOF
use chroot = no
munge symlinks = no
reverse lookup = no
address = 127.0.0.1
uid = $(id -u)
gid = $(id -g)
log file = $WORK/log/rsyncd-$name.log

[debian]
    path = $tree
    comment = make.sh $name $$
    read only = yes
    list = yes
EOF
        "$RSYNC" --daemon --no-detach --config="$conf" --port="$PORT" &
        pid=$!
        for i in $(seq 1 50); do
            if ! kill -0 "$pid" 2>/dev/null; then
                break      # could not bind, most likely: try another port
            fi
            if "$RSYNC" --list-only "rsync://127.0.0.1:$PORT/" 2>/dev/null |
                    grep -q "make.sh $name $$"; then
                DAEMON_PIDS+=("$pid")
                echo "make.sh: rsync daemon '$name' on 127.0.0.1:$PORT (pid $pid)"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    echo "make.sh: could not start rsync daemon '$name'" >&2
    return 1
}

########################################################################
# 3./4. ftpsync
########################################################################
# write_conf ARCHIVE MIRRORNAME UPSTREAMNAME PORT [extra config lines...]
write_conf() {
    local archive=$1 name=$2 upstream=$3 port=$4
    shift 4
    {
        cat <<EOF
# written by tests/data/ftpsync/make.sh
MIRRORNAME=${name}
TRACEHOST=${name}
TO=${WORK}/${archive}/
BASEDIR=${WORK}
LOGDIR=${WORK}/log/${archive}
MAILTO=nobody@example.net
HUB=false

RSYNC=${RSYNC}
RSYNC_HOST=${upstream}
RSYNC_PATH=debian
RSYNC_SOURCE=rsync://127.0.0.1:${port}/debian
RSYNC_BW=32

# ftpsync mails only on errors; keep that away from the local MTA.
mailf() { echo "mailf (not sent): \$*" >> "${WORK}/log/mail.log"; }
EOF
        local line
        for line in "$@"; do
            printf '%s\n' "$line"
        done
    } > "$WORK/home/.config/ftpsync/ftpsync-${archive}.conf"
}

# run_ftpsync ARCHIVE [ftpsync args...]
run_ftpsync() {
    local archive=$1 rc=0 err
    shift
    echo "make.sh: ftpsync $* sync:archive:${archive}"
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$WORK/home" LOGNAME="$(id -un)" \
        "$FTPSYNC" "$@" "sync:archive:${archive}" < /dev/null || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "make.sh: ftpsync for ${archive} exited ${rc}" >&2
        return 1
    fi
    # rsync's stderr (rotated to .0 by ftpsync on exit) must be empty
    for err in "$WORK/log/${archive}/rsync-ftpsync-${archive}.error"*; do
        if [[ -s $err ]]; then
            echo "make.sh: rsync reported errors for ${archive}: $err" >&2
            return 1
        fi
    done
    [[ -f "$WORK/${archive}/project/trace/${archive}.example.net" ]]
}

start_daemon primary "$P"
write_conf tier1 tier1.example.net primary.example.net "$PORT" \
    'INFO_MAINTAINER="Tier One Admins <mirror@tier1.example.net>"' \
    'INFO_SPONSOR="Example Hosting <https://tier1.example.net>"' \
    'INFO_COUNTRY=DE' \
    'INFO_LOCATION="Frankfurt"' \
    'INFO_THROUGHPUT=10Gb'
run_ftpsync tier1 -T cron

start_daemon tier1 "$WORK/tier1"
write_conf tier2 tier2.example.net tier1.example.net "$PORT"
run_ftpsync tier2

########################################################################
# 5. Checks, then copy the traces out
########################################################################
T1="$WORK/tier1/project/trace"
T2="$WORK/tier2/project/trace"
fail() { echo "make.sh: check failed: $*" >&2; exit 1; }
cmp -s "$P/project/trace/master" "$T1/master" || fail "tier1 master differs from primary's"
cmp -s "$P/project/trace/master" "$T2/master" || fail "tier2 master differs from primary's"
cmp -s "$T1/tier1.example.net" "$T2/tier1.example.net" || fail "tier2's copy of tier1's trace differs"
grep -qx "Archive serial: ${SERIAL}" "$T1/tier1.example.net" || fail "tier1 serial"
grep -qx "Archive serial: ${SERIAL}" "$T2/tier2.example.net" || fail "tier2 serial"
[[ $(wc -l < "$T1/_hierarchy") -eq 1 ]] || fail "tier1 _hierarchy is not one line"
[[ $(wc -l < "$T2/_hierarchy") -eq 2 ]] || fail "tier2 _hierarchy is not two lines"
if [[ -e "$WORK/log/mail.log" ]]; then fail "ftpsync tried to send mail: $(cat "$WORK/log/mail.log")"; fi

rm -rf "$OUT/primary" "$OUT/tier1" "$OUT/tier2"
mkdir -p "$OUT/primary" "$OUT/tier1" "$OUT/tier2"
cp "$P/project/trace/master" "$OUT/primary/master"
cp "$T1/master" "$T1/tier1.example.net" "$T1/_hierarchy" "$OUT/tier1/"
cp "$T2/master" "$T2/tier1.example.net" "$T2/tier2.example.net" "$T2/_hierarchy" "$OUT/tier2/"
chmod 644 "$OUT"/primary/* "$OUT"/tier1/* "$OUT"/tier2/*

echo "make.sh: wrote:"
(cd "$OUT" && find primary tier1 tier2 -type f | sort | sed 's/^/  /')

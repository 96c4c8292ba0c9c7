#!/usr/bin/env bash
# Hostile configuration inputs against a release build: each `pushmirror check` (or
# `import-runmirrors`) must end with a located error or ok — never hang, panic or eat memory.
# Prints exit code, wall time and peak RSS per input. Usage: benches/hostile-inputs.sh [BINARY]
set -uo pipefail
bin="${1:-target/release/pushmirror}"
bin="$(realpath "$bin")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

base() { # a valid main file and one mirror
  mkdir -p "$1/mirrors.d" "$1/archive"
  printf 'mirrors_dir: mirrors.d\nstate_dir: state\n%barchives:\n  debian:\n    root: archive\n' "${2:-}" > "$1/pushmirror.yaml"
  printf 'http:\n  url: http://127.0.0.1:9/\n' > "$1/mirrors.d/m.yaml"
}
run() { # NAME CONFIG [ARGS...]
  local name="$1" cfg="$2"; shift 2
  [ $# -gt 0 ] || set -- check
  /usr/bin/time -o time.txt -f '%e %M' timeout 60 "$bin" -c "$cfg" "$@" >/dev/null 2>err.txt
  local code=$?
  read -r secs kb < <(tail -1 time.txt)
  printf '| %s | %s | %s s | %s MB | %s |\n' "$name" "$code" "$secs" "$(awk "BEGIN{printf \"%.1f\", $kb/1024}")" \
    "$(head -1 err.txt | cut -c1-110 | sed "s#$work/##g; s/|/\\\\|/g")"
}

echo '| input | exit | time | peak RSS | first line of stderr |'
echo '|---|---|---|---|---|'
base ok; run "valid config" ok/pushmirror.yaml
base deepmap; python3 -c "print('x: ' + '{a: ' * 100000 + '1' + '}' * 100000)" >> deepmap/mirrors.d/m.yaml; run "mirror file with a map nested 100,000 deep" deepmap/pushmirror.yaml
base deeplist; python3 -c "print('tags: ' + '[' * 100000 + ']' * 100000)" >> deeplist/mirrors.d/m.yaml; run "tags: nested 100,000 deep" deeplist/pushmirror.yaml
base biglist; python3 -c "import sys; sys.stdout.write('tags:\n' + '  - t\n' * (50 * 1024 * 1024 // 6))" >> biglist/mirrors.d/m.yaml; run "50 MiB tags: list" biglist/pushmirror.yaml
base manyarch; python3 -c "import sys; sys.stdout.write(''.join(f'  a{i}:\n    root: archive\n' for i in range(30000)))" >> manyarch/pushmirror.yaml; run "30,000 archives (0.9 MiB)" manyarch/pushmirror.yaml
base zero; ln -sf /dev/zero zero/mirrors.d/zero.yaml; run "mirror file -> /dev/zero" zero/pushmirror.yaml
base fifo; mkfifo fifo/mirrors.d/fifo.yaml; run "FIFO mirror file" fifo/pushmirror.yaml
mkdir -p fifomain; mkfifo fifomain/pushmirror.yaml; run "FIFO main config" fifomain/pushmirror.yaml
base pw; mkfifo pw/pw; printf 'http:\n  url: http://127.0.0.1:9/\n  basic_auth: { user: u, password_file: ../pw }\n' > pw/mirrors.d/m.yaml; run "FIFO password_file" pw/pushmirror.yaml
base sparse; truncate -s 1G sparse/url; chmod 600 sparse/url; printf 'http:\n  url_file: ../url\n' > sparse/mirrors.d/m.yaml; run "1 GiB sparse url_file" sparse/pushmirror.yaml
base key 'identity: key\n'; mkfifo key/key; printf 'ssh: { host: 127.0.0.1, user: m }\n' > key/mirrors.d/m.yaml; run "FIFO identity" key/pushmirror.yaml
base mb; printf '    locks:\n      - aé: 1\n  aé:\n    trace: x\n' >> mb/pushmirror.yaml; run "archive aé after a list line - aé: 1" mb/pushmirror.yaml
base huge; python3 -c "import sys; sys.stdout.write('# ' + 'x' * (2 * 1024 * 1024) + '\n')" >> huge/pushmirror.yaml; run "2 MiB main file" huge/pushmirror.yaml
base dur; printf '    settle: 300000000000y\n' >> dur/pushmirror.yaml; run "settle: 300000000000y" dur/pushmirror.yaml
base imp; python3 -c "
import random; random.seed(7); w=['all','staged','mhop','m','h.example','-i','k','-b','192.0.2.1','é','日本','\"','=','ssh+ftpsync://u@h/d','#']
print('\n'.join(' '.join(random.choice(w) for _ in range(random.randint(0,9))) for _ in range(40000)))" > imp/runmirrors-debian.mirror
run "import-runmirrors, 40,000 random lines" imp/pushmirror.yaml import-runmirrors imp/runmirrors-debian.mirror --out imp/out

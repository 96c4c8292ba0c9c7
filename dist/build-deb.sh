#!/usr/bin/env bash
# Builds the Debian package: release binary, man page and completions generated from the CLI
# definitions, then `cargo deb --no-build`. cargo-deb is taken from PATH, else installed once
# into target/tools (nothing is installed outside the repository).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null; then
  if ! [ -x target/tools/bin/cargo-deb ]; then
    cargo install --quiet --locked --root target/tools cargo-deb@3.8.0
  fi
  export PATH="$PWD/target/tools/bin:$PATH"
fi
cargo build --release
mkdir -p target/assets/completions
target/release/pushmirror manpage > target/assets/pushmirror.1
for shell in bash zsh fish; do
  target/release/pushmirror completions "$shell" > "target/assets/completions/pushmirror.$shell"
done
cargo deb --no-build "$@"

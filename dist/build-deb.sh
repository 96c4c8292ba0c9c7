#!/usr/bin/env bash
# Builds the Debian package: release binary, man page and completions generated from the CLI
# definitions, then `cargo deb --no-build` (cargo install cargo-deb).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
mkdir -p target/assets/completions
target/release/pushmirror manpage > target/assets/pushmirror.1
for shell in bash zsh fish; do
  target/release/pushmirror completions "$shell" > "target/assets/completions/pushmirror.$shell"
done
cargo deb --no-build "$@"

#!/usr/bin/env python3
"""The minimum supported Rust version holds: no crate in the resolved dependency graph declares
a `rust-version` newer than pushmirror's own. Reads `cargo metadata` on stdin; exits 1 naming
the crates that need more."""
import json
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.load(sys.stdin)
ours = next(p for p in meta["packages"] if p["name"] == "pushmirror")["rust_version"]
resolved = {node["id"] for node in meta["resolve"]["nodes"]}
newer = [
    f'{p["name"]} {p["version"]} needs Rust {p["rust_version"]}'
    for p in meta["packages"]
    if p["id"] in resolved and p.get("rust_version") and version(p["rust_version"]) > version(ours)
]
if newer:
    print(f"rust-version = {ours}, but:\n  " + "\n  ".join(newer))
    sys.exit(1)
print(f"rust-version {ours}: every dependency builds with it")

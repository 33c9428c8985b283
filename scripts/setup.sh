#!/usr/bin/env bash
# Installs what building, booting, testing and debugging the kernel need, if missing:
# the Rust target (rustup) and QEMU, dtc, qemu-img, gdb-multiarch and shellcheck (apt, when run
# as root).
set -euo pipefail

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo is missing: install Rust with rustup (https://rustup.rs)" >&2
    exit 2
fi
# rust-toolchain.toml lists the target; rustup installs it on first use, this makes it explicit.
if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-none; then
    echo "setup: adding the Rust target aarch64-unknown-none"
    rustup target add aarch64-unknown-none
fi

missing=()
command -v qemu-system-aarch64 >/dev/null 2>&1 || missing+=(qemu-system-arm)
command -v qemu-img >/dev/null 2>&1 || missing+=(qemu-utils)
command -v dtc >/dev/null 2>&1 || missing+=(device-tree-compiler)
command -v gdb-multiarch >/dev/null 2>&1 || missing+=(gdb-multiarch)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
((${#missing[@]})) || exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: missing packages: ${missing[*]}" >&2
    echo "  install them with: sudo apt-get install -y qemu-system-arm qemu-utils gdb-multiarch device-tree-compiler shellcheck" >&2
    exit 2
fi
echo "setup: installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=(qemu-system-arm gdb-multiarch device-tree-compiler shellcheck)
# Some images ship a newer qemu-utils (from backports) that conflicts with the distribution's
# qemu-system-arm: install qemu-utils at the version qemu-system-arm will be installed at.
qemu_version=$(apt-cache policy qemu-system-arm | awk '/Candidate:/ {print $2}')
if [[ -n $qemu_version && $qemu_version != "(none)" ]]; then
    pkgs+=("qemu-utils=$qemu_version")
else
    pkgs+=(qemu-utils)
fi
apt-get install -y -qq --allow-downgrades "${pkgs[@]}" >/dev/null
echo "setup: done"

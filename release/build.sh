#!/usr/bin/env bash
# Builds what an operator installs on a ZStack / Mevoco management node, into dist/:
#   mnbackup-VERSION-x86_64 / -aarch64          the binaries (glibc >= 2.17, LTO, stripped)
#   mnbackup-VERSION-ARCH-linux.tar.gz          binary + man pages + completions + unit + config
#   mnbackup-VERSION-1.x86_64.rpm / .aarch64.rpm  (EL7 / EL8 / Kylin / UOS; gzip payload for EL7)
#   mnbackup_VERSION-1_amd64.deb / _arm64.deb
#   gen/                                        man pages, completions, unit (from the code)
#   SHA256SUMS
# On a fresh Debian machine with rustup it installs what it needs: the aarch64 Rust target, Zig
# (PyPI `ziglang`) and cargo-zigbuild, cargo-deb and cargo-generate-rpm.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

targets=(x86_64-unknown-linux-gnu aarch64-unknown-linux-gnu)
glibc=2.17
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1

step() { printf '\n== %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }

step "tools"
for t in "${targets[@]}"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
if ! command -v cargo-zigbuild >/dev/null 2>&1 || ! python3 -m ziglang version >/dev/null 2>&1; then
  if ! command -v pip3 >/dev/null 2>&1; then
    echo "installing python3-pip (to install Zig from PyPI's ziglang and cargo-zigbuild)"
    if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip >/dev/null
  fi
  pip3 install --quiet ziglang cargo-zigbuild ||
    pip3 install --quiet --break-system-packages ziglang cargo-zigbuild
  hash -r
  command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
fi
command -v cargo-deb >/dev/null 2>&1 ||
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
command -v cargo-generate-rpm >/dev/null 2>&1 ||
  cargo install --locked --quiet cargo-generate-rpm --version "$CARGO_GENERATE_RPM_VERSION"

version=$(cargo metadata --no-deps --format-version 1 |
  python3 -c 'import json,sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"]=="mnbackup"))')

step "binaries (cargo zigbuild, profile dist, glibc $glibc)"
zig_targets=()
for t in "${targets[@]}"; do zig_targets+=(--target "$t.$glibc"); done
cargo zigbuild --locked --profile dist -p mnbackup --bin mnbackup "${zig_targets[@]}"

step "man pages, completions, unit (mnbackup-gen)"
rm -rf dist
mkdir -p dist
cargo run --locked --quiet -p mnbackup-gen -- dist/gen >/dev/null

for t in "${targets[@]}"; do
  arch=${t%%-*}
  bin="target/$t/dist/mnbackup"
  step "$arch: binary, tarball, deb, rpm"
  cp "$bin" "dist/mnbackup-$version-$arch"
  tdir="dist/mnbackup-$version-$arch-linux"
  mkdir -p "$tdir/man/man1" "$tdir/completions" "$tdir/systemd"
  cp "$bin" "$tdir/mnbackup"
  cp dist/gen/man/*.1 "$tdir/man/man1/"
  cp dist/gen/completions/* "$tdir/completions/"
  cp dist/gen/systemd/mnbackup.service dist/gen/tmpfiles/mnbackup.conf "$tdir/systemd/"
  cp LICENSE CHANGELOG.md README.md "$tdir/"
  cp docs/zstack-node.example.toml "$tdir/mnbackup.toml.example"
  tar -C dist -czf "$tdir.tar.gz" --owner=0 --group=0 "$(basename "$tdir")"
  rm -rf "$tdir"
  cargo deb --locked -p mnbackup --no-build --no-strip --target "$t" --profile dist -o dist/ >/dev/null
  cargo generate-rpm -p . --target "$t" --profile dist --payload-compress gzip -o dist/ >/dev/null
done

(cd dist && sha256sum mnbackup-* mnbackup_* > SHA256SUMS)
step "done"
ls -l dist

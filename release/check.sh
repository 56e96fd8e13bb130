#!/usr/bin/env bash
# Proves the release: runs release/build.sh (unless CHECK_REUSE_DIST=1 and dist/ is complete),
# then for each architecture checks the binary (highest GLIBC_ symbol version <= 2.17, size <=
# 20 MB, `--version` and a files-only init/snapshot/export round trip whose bytes are compared;
# aarch64 under qemu-aarch64), the deb and rpm listings (binary, unit, man pages, completions,
# config mode 0600 and kept on upgrade, LICENSE), and installs the x86_64 deb with dpkg -i
# (`mnbackup --version`, `man mnbackup`, nothing enabled), purging it again afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

max_glibc=2.17
max_bytes=$((20 * 1024 * 1024))
fail() { echo "release check FAILED: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

need=()
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-arm64-cross)
command -v rpm >/dev/null 2>&1 || need+=(rpm)
command -v readelf >/dev/null 2>&1 || need+=(binutils)
command -v man >/dev/null 2>&1 || need+=(man-db)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} (needed by the release check)"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ "${CHECK_REUSE_DIST:-0}" = 1 ] && [ -f dist/SHA256SUMS ]; then
  echo "reusing dist/ (CHECK_REUSE_DIST=1)"
else
  start=$(date +%s)
  ./release/build.sh
  echo "release/build.sh took $(( $(date +%s) - start )) s"
fi

version=$(sed -n 's/^mnbackup-\([0-9][^ ]*\)-x86_64$/\1/p' <(ls dist))
[ -n "$version" ] || fail "no dist/mnbackup-VERSION-x86_64 binary"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The test data: a small tree with text, a binary file of random bytes, an empty file, a symlink.
src="$work/data"
mkdir -p "$src/etc/sub"
printf 'DB.url=jdbc:mysql://127.0.0.1:3306/zstack\n' > "$src/etc/zstack.properties"
head -c 3000000 /dev/urandom > "$src/etc/sub/blob.bin"
: > "$src/etc/sub/empty"
ln -s zstack.properties "$src/etc/link"
printf '[repository]\ncache_dir = "%s/cache"\n' "$work" > "$work/mnbackup.toml"

for arch in x86_64 aarch64; do
  bin="dist/mnbackup-$version-$arch"
  [ -x "$bin" ] || fail "$bin missing"
  case $arch in
    x86_64) run=("$root/$bin"); machine="X86-64"; debarch=amd64 ;;
    aarch64) run=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$root/$bin"); machine="AArch64"; debarch=arm64 ;;
  esac
  readelf -h "$bin" | grep -q "Machine:.*$machine" || fail "$bin is not an $machine binary"

  # Highest GLIBC_ version any symbol needs.
  highest=$(readelf -W --version-info --dyn-syms "$bin" | grep -o 'GLIBC_[0-9][0-9.]*' |
    sed 's/GLIBC_//' | sort -t. -k1,1n -k2,2n -k3,3n | tail -1)
  [ -n "$highest" ] || fail "$bin: no GLIBC_ symbol versions found (readelf output changed?)"
  [ "$(printf '%s\n%s\n' "$highest" "$max_glibc" | sort -t. -k1,1n -k2,2n -k3,3n | tail -1)" = "$max_glibc" ] ||
    fail "$bin needs GLIBC_$highest, newer than $max_glibc (CentOS 7)"
  ok "$arch: highest symbol version GLIBC_$highest <= $max_glibc"

  size=$(stat -c %s "$bin")
  [ "$size" -le "$max_bytes" ] || fail "$bin is $size bytes, over 20 MB"
  ok "$arch: $size bytes <= 20 MB"

  out=$("${run[@]}" --version) || fail "$arch: --version failed"
  [ "$out" = "mnbackup $version" ] || fail "$arch: --version printed '$out'"
  ok "$arch: --version: $out"

  repo="$work/repo-$arch"
  export_dir="$work/export-$arch"
  # init encrypts (format v2) and reads the passphrase from the environment when not on a tty.
  export MNBACKUP_PASSWORD="release-check-passphrase"
  "${run[@]}" -c "$work/mnbackup.toml" -r "$repo" init >/dev/null
  "${run[@]}" -c "$work/mnbackup.toml" -r "$repo" -q snapshot --only-files --files "$src/etc"
  "${run[@]}" -c "$work/mnbackup.toml" -r "$repo" export latest "$export_dir" >/dev/null
  got="$export_dir/files${src}/etc"
  [ -d "$got" ] || fail "$arch: export has no $got: $(find "$export_dir" | head)"
  diff -r --no-dereference "$src/etc" "$got" || fail "$arch: exported files differ from the originals"
  cmp "$src/etc/sub/blob.bin" "$got/sub/blob.bin" || fail "$arch: blob.bin differs"
  [ "$(readlink "$got/link")" = zstack.properties ] || fail "$arch: symlink not restored"
  ok "$arch: files-only init/snapshot/export round trip: bytes equal"

  # Package listings.
  deb="dist/mnbackup_${version}-1_${debarch}.deb"
  rpm_file="dist/mnbackup-${version}-1.${arch}.rpm"
  [ -f "$deb" ] || fail "$deb missing"
  [ -f "$rpm_file" ] || fail "$rpm_file missing"
  dpkg-deb -f "$deb" Architecture | grep -qx "$debarch" || fail "$deb: wrong architecture"
  dlist=$(dpkg-deb -c "$deb")
  for want in \
    '^-rwxr-xr-x .* \./usr/bin/mnbackup$' \
    '^-rw------- .* \./etc/mnbackup/mnbackup\.toml$' \
    '^-rw-r--r-- .* \./usr/lib/systemd/system/mnbackup\.service$' \
    '^-rw-r--r-- .* \./usr/lib/tmpfiles\.d/mnbackup\.conf$' \
    '\./usr/share/man/man1/mnbackup\.1(\.gz)?$' \
    '\./usr/share/man/man1/mnbackup-snapshot\.1(\.gz)?$' \
    '\./usr/share/man/man1/mnbackup-schedule-install\.1(\.gz)?$' \
    '\./usr/share/bash-completion/completions/mnbackup$' \
    '\./usr/share/zsh/vendor-completions/_mnbackup$' \
    '\./usr/share/doc/mnbackup/(LICENSE|copyright)$'; do
    grep -Eq "$want" <<<"$dlist" || fail "$deb lacks $want; it has:
$dlist"
  done
  grep -q '/etc/mnbackup/mnbackup.toml' <(dpkg-deb -I "$deb" conffiles) || fail "$deb: the config is not a conffile"
  for s in preinst postinst prerm postrm; do
    ! dpkg-deb -I "$deb" "$s" >/dev/null 2>&1 || fail "$deb has a $s script (installing must start nothing)"
  done
  ok "$arch: deb listing"

  [ "$(rpm -qp --qf '%{ARCH}' "$rpm_file" 2>/dev/null)" = "$arch" ] || fail "$rpm_file: wrong architecture"
  rpm -qp --qf '%{PAYLOADCOMPRESSOR}' "$rpm_file" 2>/dev/null | grep -qx gzip ||
    fail "$rpm_file: payload not gzip (CentOS 7's rpm reads no zstd)"
  rlist=$(rpm -qp --qf '[%{FILEMODES:perms} %{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" 2>/dev/null)
  for want in \
    '^-rwxr-xr-x .* /usr/bin/mnbackup$' \
    '^-rw------- cn /etc/mnbackup/mnbackup\.toml$' \
    ' /usr/lib/systemd/system/mnbackup\.service$' \
    ' /usr/lib/tmpfiles\.d/mnbackup\.conf$' \
    ' /usr/share/man/man1/mnbackup\.1$' \
    ' /usr/share/man/man1/mnbackup-schedule-install\.1$' \
    ' /usr/share/bash-completion/completions/mnbackup$' \
    ' /usr/share/zsh/site-functions/_mnbackup$' \
    ' /usr/share/licenses/mnbackup/LICENSE$'; do
    grep -Eq "$want" <<<"$rlist" || fail "$rpm_file lacks $want; it has:
$rlist"
  done
  for s in PREIN POSTIN PREUN POSTUN; do
    [ "$(rpm -qp --qf "%{$s}" "$rpm_file" 2>/dev/null)" = "(none)" ] ||
      fail "$rpm_file has a $s scriptlet (installing must start nothing)"
  done
  ok "$arch: rpm listing"
done

# Install the x86_64 deb on this machine.
deb="dist/mnbackup_${version}-1_amd64.deb"
if dpkg -s mnbackup >/dev/null 2>&1; then
  fail "a mnbackup package is already installed here; remove it (dpkg --purge mnbackup) first"
fi
[ -e /etc/mnbackup/mnbackup.toml ] && fail "/etc/mnbackup/mnbackup.toml exists outside a package; move it away first"
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
$SUDO dpkg -i "$deb" >/dev/null
trap '$SUDO dpkg --purge mnbackup >/dev/null; rm -rf "$work"' EXIT
[ "$(/usr/bin/mnbackup --version)" = "mnbackup $version" ] || fail "installed /usr/bin/mnbackup --version"
[ "$(stat -c %a /etc/mnbackup/mnbackup.toml)" = 600 ] || fail "installed config is not mode 600"
# Justified text has runs of spaces: squeeze them before matching. The page is read whole first:
# `grep -q` in the pipe would stop reading at the match and, under pipefail, man's SIGPIPE (141)
# would fail the check.
page() { MANPAGER=cat MANWIDTH=200 man "$1" 2>/dev/null | tr -s ' ' || true; }
grep -q 'mnbackup - Backup and disaster recovery' <<<"$(page mnbackup)" ||
  fail "man mnbackup does not show the page"
grep -q 'Rebuild the node from a snapshot' <<<"$(page mnbackup-restore)" ||
  fail "man mnbackup-restore does not show the page"
[ ! -e /etc/systemd/system/multi-user.target.wants/mnbackup.service ] || fail "installing enabled the service"
ok "dpkg -i: mnbackup --version, man mnbackup, config 0600, nothing enabled"
echo "release check passed"

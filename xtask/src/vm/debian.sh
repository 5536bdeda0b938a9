#!/usr/bin/env bash
# Fetches Debian packages into a cache folder, with a private apt
# configuration per architecture (the system's /etc/apt is never touched).
#   debian.sh kernel CACHE ARCH LABEL OUT
#     the newest Debian kernel of one series: OUT/{kver,package,vmlinuz-path,root/lib/modules/KVER}
#   debian.sh root CACHE ARCH OUT PACKAGE...
#     a root folder of another architecture's programs: the packages and
#     everything they depend on, unpacked (bookworm's, as this machine's).
set -euo pipefail
mode=$1 cache=$2 arch=$3
apt_dir=$cache/apt-$arch
mkdir -p "$apt_dir/lists/partial" "$cache/debs/partial"
: > "$apt_dir/status"
cat > "$apt_dir/sources.list" <<SOURCES
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-backports main
SOURCES
A=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$apt_dir/lists"
   -o Dir::State::status="$apt_dir/status" -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
   -o Dir::Cache::archives="$cache/debs" -o APT::Sandbox::User=root -o Debug::NoLocking=1
   -o APT::Architecture="$arch" -o APT::Architectures::="$arch")
# One index refresh a day is plenty.
if [ -z "$(find "$apt_dir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get -q "${A[@]}" update >&2
fi

if [ "$mode" = root ]; then
  out=$4; shift 4
  # An empty status: apt fetches every dependency, as for a new system.
  apt-get -q -y "${A[@]}" -t bookworm --no-install-recommends install --download-only "$@" >&2
  rm -rf "$out.tmp" && mkdir -p "$out.tmp"
  # The packages as apt chose them: "Inst NAME (VERSION SUITE [ARCH])".
  apt-get -q -y "${A[@]}" -t bookworm --no-install-recommends install -s "$@" \
    | sed -n 's/^Inst \([^ ]*\) (\([^ ]*\) [^[]*\[\([a-z0-9]*\)\].*/\1_\2_\3.deb/p' | sed 's/:/%3a/' \
    | while read -r deb; do dpkg -x "$cache/debs/$deb" "$out.tmp"; done
  # What dash's maintainer script would do.
  ln -sfn dash "$out.tmp/bin/sh"
  # Merged /usr, as on this machine: laid over its /, the root's /usr/sbin
  # must hide the host's programs of the same names (losetup, mkfs.*).
  for dir in bin sbin lib; do
    if [ -d "$out.tmp/$dir" ] && [ ! -L "$out.tmp/$dir" ]; then
      mkdir -p "$out.tmp/usr/$dir" && cp -a "$out.tmp/$dir/." "$out.tmp/usr/$dir/"
      rm -rf "${out:?}.tmp/$dir" && ln -s "usr/$dir" "$out.tmp/$dir"
    fi
  done
  rm -rf "$out" && mv "$out.tmp" "$out"
  exit 0
fi

label=$4 out=$5
newest() { apt-cache "${A[@]}" pkgnames "$1" | { grep -E "$2" || true; } | sort -V | tail -1; }
case $label in
  5.10) pkgs=$(newest linux-image- "^linux-image-5\.10\.0-[0-9]+-$arch\$") ;;
  6.1)  pkgs=$(newest linux-image- "^linux-image-6\.1\.0-[0-9]+-$arch\$") ;;
  6.12) pkgs=$(newest linux-image- "^linux-image-6\.12\.[0-9]+\+deb13-$arch\$") ;;
  7.3)
    bin=$(newest linux-binary- "^linux-binary-7\.3\.[0-9]+\+deb13-$arch\$")
    ver=${bin#linux-binary-}
    pkgs="$bin linux-base-$ver linux-modules-$ver" ;;
  *) echo "unknown kernel $label" >&2; exit 2 ;;
esac
[ -n "$pkgs" ] || { echo "no Debian package found for kernel $label ($arch)" >&2; exit 1; }
rm -rf "$out.tmp" && mkdir -p "$out.tmp/root"
( cd "$cache/debs" && apt-get -q "${A[@]}" download $pkgs >&2 )
for p in $pkgs; do dpkg -x "$(ls -t "$cache"/debs/"${p}"_*.deb | head -1)" "$out.tmp/root"; done
# Merged /usr (trixie and later) keeps modules under usr/lib.
mods=$( { ls -d "$out.tmp"/root/lib/modules/* "$out.tmp"/root/usr/lib/modules/* 2>/dev/null || true; } | head -1)
kver=$(basename "$mods")
if [ "$mods" != "$out.tmp/root/lib/modules/$kver" ]; then
  mkdir -p "$out.tmp/root/lib/modules" && mv "$mods" "$out.tmp/root/lib/modules/$kver"
fi
depmod -b "$out.tmp/root" "$kver"
vmlinuz=$( { find "$out.tmp/root" -name 'vmlinuz*' -type f || true; } | head -1)
[ -n "$vmlinuz" ] || { echo "no vmlinuz in $pkgs" >&2; exit 1; }
echo "$kver" > "$out.tmp/kver"
echo "$pkgs" > "$out.tmp/package"
echo "$vmlinuz" > "$out.tmp/vmlinuz-path"
rm -rf "$out" && mv "$out.tmp" "$out"
sed -i "s|$out.tmp|$out|" "$out/vmlinuz-path"

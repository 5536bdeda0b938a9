#!/usr/bin/env bash
# Fetches the newest Debian kernel of one series into a cache folder, with a
# private apt configuration (the system's /etc/apt is never touched).
#   fetch-kernel.sh CACHE LABEL
# Leaves CACHE/LABEL/{vmlinux,kver,package,root/lib/modules/KVER}.
set -euo pipefail
cache=$1 label=$2
apt_dir=$cache/apt
mkdir -p "$apt_dir/lists/partial" "$cache/debs/partial"
cat > "$apt_dir/sources.list" <<SOURCES
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian trixie main
deb http://deb.debian.org/debian trixie-backports main
SOURCES
A=(-o Dir::Etc::sourcelist="$apt_dir/sources.list" -o Dir::Etc::sourceparts=- -o Dir::State::Lists="$apt_dir/lists"
   -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache= -o Dir::Cache::archives="$cache/debs" -o APT::Sandbox::User=root
   -o Debug::NoLocking=1)
# One index refresh a day is plenty.
if [ -z "$(find "$apt_dir/lists" -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
  apt-get -q "${A[@]}" update >&2
fi
newest() { apt-cache "${A[@]}" pkgnames "$1" | grep -E "$2" | sort -V | tail -1; }
case $label in
  5.10) pkgs=$(newest linux-image- '^linux-image-5\.10\.0-[0-9]+-amd64$') ;;
  6.1)  pkgs=$(newest linux-image- '^linux-image-6\.1\.0-[0-9]+-amd64$') ;;
  6.12) pkgs=$(newest linux-image- '^linux-image-6\.12\.[0-9]+\+deb13-amd64$') ;;
  7.3)
    bin=$(newest linux-binary- '^linux-binary-7\.3\.[0-9]+\+deb13-amd64$')
    ver=${bin#linux-binary-}
    pkgs="$bin linux-base-$ver linux-modules-$ver" ;;
  *) echo "unknown kernel $label" >&2; exit 2 ;;
esac
[ -n "$pkgs" ] || { echo "no Debian package found for kernel $label" >&2; exit 1; }
out=$cache/$label
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

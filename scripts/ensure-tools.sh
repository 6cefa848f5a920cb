#!/usr/bin/env bash
# Installs, from Debian's packages, whatever of the named tools is missing.
# Usage: scripts/ensure-tools.sh TOOL...   (sourced or run; idempotent)
# Each tool maps to the Debian package that provides it.
set -euo pipefail

package_for() {
  case "$1" in
    cc|gcc) echo gcc ;;
    c++|g++) echo g++ ;;
    openssl) echo openssl ;;
    clang-19) echo clang-19 ;;
    lld-link-19) echo lld-19 ;;
    llvm-pdbutil-19|llvm-dlltool-19|llvm-nm-19|llvm-strip-19|llvm-dwarfdump-19|llvm-objdump-19|llvm-readobj-19|llvm-objcopy-19) echo llvm-19 ;;
    aarch64-linux-gnu-gcc) echo gcc-aarch64-linux-gnu ;;
    bsdiff) echo bsdiff ;;
    cmake) echo cmake ;;
    /usr/bin/time) echo time ;;
    bc) echo bc ;;
    qemu-system-aarch64) echo qemu-system-arm ;;
    cpio) echo cpio ;;
    *) echo "ensure-tools: no package known for '$1'" >&2; return 1 ;;
  esac
}

missing=()
for tool in "$@"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$(package_for "$tool")")
done
[ ${#missing[@]} -eq 0 ] && exit 0

mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "Installing missing packages: ${pkgs[*]}" >&2
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "ensure-tools: need root or sudo to install ${pkgs[*]}" >&2; exit 1; }
  sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >&2

#!/usr/bin/env bash
# Builds the hotpatch scenario corpus: every corpus/<scenario>/src/<version>/
# for the four targets, into corpus/<scenario>/bin/<target>/<version>.{dll,pdb,so}.
#
#   corpus/build.sh                      rebuild every binary in place
#   corpus/build.sh --check              build into a temp dir and compare with the
#                                        committed binaries (exit 1 on any difference,
#                                        missing or extra file)
#   --scenario NAME   only this scenario (may be repeated)
#   --target T        only this target (may be repeated):
#                     x86_64-windows aarch64-windows x86_64-linux aarch64-linux
#
# The output is deterministic and independent of where the repository lives:
# every compile and link runs inside a scratch directory on relative file names,
# and no absolute path or timestamp reaches a binary (see the flags below).
# A scenario folder that holds a file named `shipped-stripped` is built the same
# way but shipped as distributions ship it: ELF images stripped of symbols and
# debug information (llvm-strip-19 --strip-all: .dynsym and .eh_frame stay), PE
# images without their PDB (bin/<target>/ holds only the .dll files).
# Needs: clang-19 and lld-link-19 (PE targets), gcc (x86_64-linux),
# aarch64-linux-gnu-gcc (aarch64-linux), llvm-strip-19 (ELF targets of a
# shipped-stripped scenario). Nothing else (no python).
set -euo pipefail
export LC_ALL=C
export TZ=UTC
unset SOURCE_DATE_EPOCH || true

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL_TARGETS=(x86_64-windows aarch64-windows x86_64-linux aarch64-linux)

die() { echo "build.sh: $*" >&2; exit 2; }

check=0
sel_scen=()
sel_tgt=()
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --scenario) [ $# -ge 2 ] || die "--scenario needs a name"; sel_scen+=("${2%/}"); shift ;;
    --scenario=*) v=${1#*=}; sel_scen+=("${v%/}") ;;
    --target) [ $# -ge 2 ] || die "--target needs a name"; sel_tgt+=("$2"); shift ;;
    --target=*) sel_tgt+=("${1#*=}") ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
  esac
  shift
done

# ---- what to build -------------------------------------------------------
scenarios=()
for d in "$HERE"/[0-9]*-*/; do
  [ -d "$d/src" ] || continue
  scenarios+=("$(basename "$d")")
done
if [ ${#sel_scen[@]} -gt 0 ]; then
  for s in "${sel_scen[@]}"; do
    [ -d "$HERE/$s/src" ] || die "no such scenario '$s'"
  done
  scenarios=("${sel_scen[@]}")
fi
[ ${#scenarios[@]} -gt 0 ] || die "no scenarios found under $HERE"

targets=("${ALL_TARGETS[@]}")
if [ ${#sel_tgt[@]} -gt 0 ]; then
  for t in "${sel_tgt[@]}"; do
    case " ${ALL_TARGETS[*]} " in *" $t "*) ;; *) die "unknown target '$t' (one of: ${ALL_TARGETS[*]})" ;; esac
  done
  targets=("${sel_tgt[@]}")
fi

# ---- tools ---------------------------------------------------------------
need_tool() {
  command -v "$1" >/dev/null 2>&1 || die "required tool '$1' not found in PATH (needed for $2)"
}
for t in "${targets[@]}"; do
  case "$t" in
    *-windows) need_tool clang-19 "$t"; need_tool lld-link-19 "$t" ;;
    x86_64-linux) need_tool gcc "$t" ;;
    aarch64-linux) need_tool aarch64-linux-gnu-gcc "$t" ;;
  esac
done
need_tool cmp "--check"
# Whether a scenario is shipped stripped (see the header).
shipped_stripped() { [ -f "$HERE/$1/shipped-stripped" ]; }
for scen in "${scenarios[@]}"; do
  shipped_stripped "$scen" || continue
  for t in "${targets[@]}"; do
    case "$t" in *-linux) need_tool llvm-strip-19 "$scen $t (shipped stripped)" ;; esac
  done
done

# ---- flags ---------------------------------------------------------------
# Common to all targets: optimised, freestanding, no libc calls synthesised.
COMMON_CFLAGS=(-O2 -std=gnu11 -Wall -Wextra -ffreestanding -fno-builtin -fno-stack-protector)

# PE (clang-19, MSVC ABI, CodeView). -ffunction-sections/-fdata-sections give every
# function its own COMDAT section (like MSVC /Gy) so that /functionpadmin pads
# before every function. -ffile-compilation-dir=. and -gno-codeview-command-line
# keep the scratch directory out of the LF_BUILDINFO records. -mno-stack-arg-probe
# forbids __chkstk calls (there is no CRT to provide it).
# -fasynchronous-unwind-tables: .pdata/.xdata for every function that needs them,
# as every real Windows build has (the x64 and ARM64 ABIs require unwind data for
# any function that calls or touches the stack; MSVC cannot leave it out). Clang
# drops it under -ffreestanding; it is what a PE image without its PDB is read
# from (leaf functions have none, as on Windows).
PE_CFLAGS=("${COMMON_CFLAGS[@]}" -fasynchronous-unwind-tables -g -gcodeview -gno-codeview-command-line
  -ffile-compilation-dir=. -ffunction-sections -fdata-sections -mno-stack-arg-probe)
PE_CFLAGS_x86_64=(--target=x86_64-pc-windows-msvc -fms-hotpatch)
PE_CFLAGS_aarch64=(--target=aarch64-pc-windows-msvc)
# /Brepro: hash instead of timestamps and a content-derived PDB GUID.
# /pdbaltpath: PDB path recorded in the DLL is just "<version>.pdb".
# /pdbsourcepath:. keeps lld from turning the relative object and source names
# recorded in the PDB into absolute paths of the scratch directory.
# /opt:ref,noicf: drop unreferenced sections, but never fold identical functions.
PE_LDFLAGS=(/dll /noentry /nodefaultlib /debug /Brepro /pdbsourcepath:. /opt:ref /opt:noicf /incremental:no)
PE_LDFLAGS_x86_64=(/machine:x64 /functionpadmin:6)
# ARM64: lld-link has no default pad size for ARM64 (a bare /functionpadmin is
# rejected as "invalid argument for this machine"), but accepts an explicit one.
# A patch on ARM64 only needs the first 4-byte instruction; the 4 bytes of
# padding are one spare instruction slot before each function.
PE_LDFLAGS_aarch64=(/machine:arm64 /functionpadmin:4)

# ELF (Debian gcc 12). -fno-ipa-icf is the compiler-side twin of /opt:noicf
# (GCC would otherwise merge identical functions of one translation unit).
# Unwind tables are kept on purpose (.eh_frame is used to recover functions
# from a stripped copy). CET/BTI are pinned off so that the code does not
# depend on a distribution's default (Debian's is off already).
# -ffunction-sections/-fdata-sections (as kpatch-style builds do): a function's
# internal alignment padding (loop heads) is then fixed relative to its own
# section, so a change in one function cannot add or remove nops inside an
# unchanged neighbour; it also keeps aarch64 section anchors from addressing
# several objects through one base.
# -g: DWARF (gcc 12 writes version 5), so that struct layouts and the types each
# function uses can be compared like the PE targets' CodeView; -g does not
# change the code GCC generates. The scratch directory is mapped to "." (see
# build_one), so DW_AT_comp_dir and the line table hold no absolute path.
ELF_CFLAGS=("${COMMON_CFLAGS[@]}" -g -fPIC -fvisibility=hidden -fasynchronous-unwind-tables
  -ffunction-sections -fdata-sections -fno-tree-loop-distribute-patterns -fno-ipa-icf)
ELF_CFLAGS_x86_64=(-fcf-protection=none)
ELF_CFLAGS_aarch64=(-mbranch-protection=none)
ELF_LDFLAGS=(-shared -nostdlib -Wl,--build-id=sha1)

# ---- build ---------------------------------------------------------------
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/hp-corpus.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT

if [ $check -eq 1 ]; then OUT="$SCRATCH/out"; else OUT="$HERE"; fi

# Link order of one version's translation units: src/<v>/link-order (one .c
# basename per line, blank lines and #comments ignored) or sorted order.
link_order() {
  local srcdir=$1 f line
  if [ -f "$srcdir/link-order" ]; then
    while IFS= read -r line || [ -n "$line" ]; do
      line=${line%%#*}
      line=$(echo "$line" | tr -d '[:space:]')
      [ -n "$line" ] || continue
      [ -f "$srcdir/$line" ] || die "$srcdir/link-order names missing file '$line'"
      echo "$line"
    done < "$srcdir/link-order"
  else
    for f in "$srcdir"/*.c; do basename "$f"; done | sort
  fi
}

build_one() { # scenario version target outdir
  local scen=$1 ver=$2 tgt=$3 outdir=$4
  local srcdir="$HERE/$scen/src/$ver"
  local wd="$SCRATCH/work/$scen/$ver/$tgt"
  local arch=${tgt%%-*} c base objs=()
  mkdir -p "$wd"
  cp "$srcdir"/*.c "$HERE/include/hp.h" "$wd/"
  for c in "$srcdir"/*.h; do
    if [ -e "$c" ]; then cp "$c" "$wd/"; fi
  done
  local order
  order=$(link_order "$srcdir")
  [ -n "$order" ] || die "$srcdir has no .c files"
  (
    cd "$wd"
    case "$tgt" in
      *-windows)
        local -n pcf="PE_CFLAGS_$arch" pld="PE_LDFLAGS_$arch"
        for c in $order; do
          base=${c%.c}
          clang-19 "${pcf[@]}" "${PE_CFLAGS[@]}" -c "$c" -o "$base.obj"
          objs+=("$base.obj")
        done
        lld-link-19 "${PE_LDFLAGS[@]}" "${pld[@]}" "/pdbaltpath:$ver.pdb" \
          "/out:$ver.dll" "/pdb:$ver.pdb" "${objs[@]}"
        # Shipped stripped: the DLL keeps its CodeView record (as a
        # distribution's DLL names the PDB on its symbol server); the PDB
        # itself is not shipped.
        if shipped_stripped "$scen"; then
          cp "$ver.dll" "$outdir/"
        else
          cp "$ver.dll" "$ver.pdb" "$outdir/"
        fi
        ;;
      *-linux)
        local cc=gcc
        [ "$arch" = aarch64 ] && cc=aarch64-linux-gnu-gcc
        local -n ecf="ELF_CFLAGS_$arch"
        # The scratch directory, logical and physical, becomes "." in the
        # debug information (GCC leaves this option out of DW_AT_producer).
        local maps=(-ffile-prefix-map="$PWD"=. -ffile-prefix-map="$(pwd -P)"=.)
        for c in $order; do
          base=${c%.c}
          "$cc" "${ELF_CFLAGS[@]}" "${ecf[@]}" "${maps[@]}" -c "$c" -o "$base.o"
          objs+=("$base.o")
        done
        "$cc" "${ELF_LDFLAGS[@]}" -o "$ver.so" "${objs[@]}"
        # Shipped stripped: .symtab, .strtab and the DWARF sections go;
        # .dynsym, .eh_frame and the build-id note (computed at link time)
        # stay. llvm-strip writes the same bytes for the same input.
        if shipped_stripped "$scen"; then
          llvm-strip-19 --strip-all -o "$outdir/$ver.so" "$ver.so"
        else
          cp "$ver.so" "$outdir/"
        fi
        ;;
    esac
  ) || die "build failed: $scen $ver $tgt"
}

start=$SECONDS
n=0
for scen in "${scenarios[@]}"; do
  versions=()
  for v in "$HERE/$scen/src"/*/; do versions+=("$(basename "$v")"); done
  [ ${#versions[@]} -gt 0 ] || die "$scen/src has no versions"
  for tgt in "${targets[@]}"; do
    outdir="$OUT/$scen/bin/$tgt"
    rm -rf "$outdir"
    mkdir -p "$outdir"
    for ver in "${versions[@]}"; do
      build_one "$scen" "$ver" "$tgt" "$outdir"
      n=$((n + 1))
    done
  done
done

if [ $check -eq 0 ]; then
  echo "build.sh: built $n binaries in $((SECONDS - start))s"
  exit 0
fi

# ---- --check: compare with the committed binaries -------------------------
bad=0
for scen in "${scenarios[@]}"; do
  for tgt in "${targets[@]}"; do
    rel="$scen/bin/$tgt"
    built=$(cd "$OUT/$rel" && ls -A | sort)
    have=""
    [ -d "$HERE/$rel" ] && have=$(cd "$HERE/$rel" && ls -A | sort)
    for f in $built; do
      if [ ! -f "$HERE/$rel/$f" ]; then
        echo "missing: $rel/$f"; bad=1
      elif ! cmp -s "$OUT/$rel/$f" "$HERE/$rel/$f"; then
        echo "differs: $rel/$f"; bad=1
      fi
    done
    for f in $have; do
      [ -e "$OUT/$rel/$f" ] || { echo "extra:   $rel/$f"; bad=1; }
    done
  done
done
if [ $bad -ne 0 ]; then
  echo "build.sh --check: committed binaries are out of date (run corpus/build.sh)" >&2
  exit 1
fi
echo "build.sh --check: $n binaries match ($((SECONDS - start))s)"

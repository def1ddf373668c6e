# Shared by qemu/build-image.sh (the initramfs image) and qemu/build-sdimg.sh (the Mender disk
# image): Debian packages downloaded once per version into a cache directory, an ELF copier that
# takes every shared library a program needs from the unpacked packages (readelf), and a kernel
# module copier that follows each module's dependencies. Sourced; the caller defines log and die.

# Resolves the versioned kernel package behind the metapackage linux-image-<flavour>.
deb_kernel_package() { # <flavour> <deb arch>
    local k
    k="$(apt-cache depends "linux-image-$1:$2" 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[0-9][^: ]*\).*/\1/p' | head -n1)"
    [ -n "$k" ] || die "cannot resolve linux-image-$1:$2 (apt-get update?)"
    echo "$k"
}

# Fills the array deb_files with the cached .deb of each package (the candidate version),
# downloading the missing ones with apt-get download into <debs dir>.
deb_fetch() { # <debs dir> <deb arch> <package>...
    local debs="$1" deb_arch="$2"; shift 2
    mkdir -p "$debs"
    if [ "$deb_arch" != "$(dpkg --print-architecture)" ] &&
        ! dpkg --print-foreign-architectures | grep -qx "$deb_arch"; then
        die "Debian architecture $deb_arch is not enabled; run: dpkg --add-architecture $deb_arch && apt-get update"
    fi
    # One apt-cache call for all (each call parses the package lists again, about a second).
    local -A pkg_version=() pkg_arch=()
    local name version arch_field p f
    while read -r name version arch_field; do
        pkg_version[$name]="$version"
        pkg_arch[$name]="$arch_field"
    done < <(apt-cache show --no-all-versions "${@/%/:$deb_arch}" 2>/dev/null |
        awk '/^Package: /{p=$2} /^Version: /{v=$2} /^Architecture: /{a=$2} /^$/{if (p) print p, v, a; p=""} END{if (p) print p, v, a}')
    deb_files=()
    for p in "$@"; do
        version="${pkg_version[$p]-}"
        [ -n "$version" ] || die "package $p:$deb_arch not found (apt-get update?)"
        # The name apt-get download gives the file (an epoch's ':' is written as %3a).
        f="$debs/${p}_${version//:/%3a}_${pkg_arch[$p]}.deb"
        if [ ! -s "$f" ]; then
            log "downloading $p:$deb_arch $version"
            # As root, apt warns that _apt cannot write the directory; harmless.
            (cd "$debs" && apt-get download -q "$p:$deb_arch=$version" 2>&1 |
                grep -v 'Download is performed unsandboxed' >&2 || true)
            [ -s "$f" ] || die "download of $p:$deb_arch $version failed"
        fi
        deb_files+=("$f")
    done
}

# Copies an ELF file from $stage (all packages unpacked) to $root under the same path, with every
# library it needs, recursively. Libraries are looked up in $stage's multiarch directories for
# $triplet. A library no package provides is an error.
declare -A copied=()
find_lib() { # <soname>
    local d
    for d in "lib/$triplet" "usr/lib/$triplet" lib usr/lib; do
        if [ -e "$stage/$d/$1" ]; then echo "$d/$1"; return 0; fi
    done
    return 1
}
copy_elf() { # <path relative to stage>
    local rel="$1" lib interp
    [ -n "${copied[$rel]-}" ] && return 0
    copied[$rel]=1
    mkdir -p "$root/$(dirname "$rel")"
    cp -L "$stage/$rel" "$root/$rel"
    interp="$(readelf -l "$stage/$rel" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
    if [ -n "$interp" ]; then
        interp="${interp#/}"
        [ -e "$stage/$interp" ] || die "interpreter /$interp of $rel not in the packages"
        copy_elf "$interp"
    fi
    for lib in $(readelf -d "$stage/$rel" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        local found
        found="$(find_lib "$lib")" || die "$rel needs $lib, which no listed package provides"
        copy_elf "$found"
    done
}

# Copies kernel modules from $mods_src (the unpacked kernel's /lib/modules/<kver>) to $mods_dst,
# each with its dependencies; built-in ones are skipped. Then modules_finish writes a
# modules.order of what was copied and runs depmod.
declare -A mod_done=()
mod_path() { grep -E "(^|/)$1\.ko$" "$mods_src/modules.order" | head -n1; }
modules_start() {
    mkdir -p "$mods_dst"
    cp "$mods_src/modules.order" "$mods_src/modules.builtin" "$mods_dst/"
    [ -f "$mods_src/modules.builtin.modinfo" ] && cp "$mods_src/modules.builtin.modinfo" "$mods_dst/"
    return 0
}
add_module() { # <module name, - or _ as in the file name>
    local name="$1" rel dep
    rel="$(mod_path "$name")" || true
    [ -z "$rel" ] && rel="$(mod_path "${name//_/-}")" || true
    if [ -z "$rel" ]; then
        grep -Eq "/(${name}|${name//_/-})\.ko$" "$mods_src/modules.builtin" && return 0
        die "kernel module $name not found"
    fi
    [ -n "${mod_done[$rel]-}" ] && return 0
    mod_done[$rel]=1
    mkdir -p "$mods_dst/$(dirname "$rel")"
    cp "$mods_src/$rel" "$mods_dst/$rel"
    # The NUL-separated `depends=` entry of .modinfo, read without binutils (which only know the
    # host's ELF machine).
    for dep in $(tr '\0' '\n' <"$mods_src/$rel" | sed -n 's/^depends=//p' | head -n1 | tr ',' ' '); do
        add_module "$dep"
    done
}
modules_finish() { # <image root> <kernel version> <busybox to run depmod with>
    # Keep only the modules copied in modules.order so busybox depmod/modprobe see a consistent set.
    (cd "$mods_dst" && grep -Fxf <(find kernel -name '*.ko' | sort) modules.order >modules.order.new || true)
    mv "$mods_dst/modules.order.new" "$mods_dst/modules.order"
    # busybox depmod only reads the modules' .modinfo, so the host's busybox serves any architecture.
    "$3" depmod -b "$1" "$2"
}

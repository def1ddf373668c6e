SUMMARY = "Rust drop-in replacement for Mender's mender-connect device daemon"
DESCRIPTION = "Remote terminal, file transfer, port forwarding and mender-client \
               triggers over one websocket to the Mender Server, with the command \
               line, configuration file and systemd unit of mender-connect 2.1.0."
HOMEPAGE = "https://github.com/mender-connect-rs/mender-connect-rs"
BUGTRACKER = "https://github.com/mender-connect-rs/mender-connect-rs/issues"
SECTION = "console/network"
CVE_PRODUCT = "mender-connect-rs"
# The project's code is Apache-2.0 (LICENSE); the crates linked into the binary
# add MIT, ISC and BSD-3-Clause (subtle). scripts/check-layer recomputes this set
# with `cargo tree`.
LICENSE = "Apache-2.0 & MIT & ISC & BSD-3-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=3b83ef96387f14655fc854ddc3c6bd57"

PV = "0.1.0+git"

# Where the source comes from.
#
# Default (tree mode): the checkout this layer sits in, through oe-core's
# externalsrc class. The layer always builds the code beside it, and
# mender-connect-rs-crates.inc is made from that tree's Cargo.lock.
#
# Release mode (opt-in), for a build from a fixed commit of a git repository:
#   MENDER_CONNECT_RS_GIT_URI = "git://<host>/<path>.git;protocol=https;branch=main"
#   SRCREV:pn-mender-connect-rs = "<40-hex commit>"
#   MENDER_CONNECT_RS_CRATES_INC = "/abs/path/crates-<commit>.inc"
# with the crates.inc made by `scripts/gen-crates-inc --rev <commit> --output ...`
# from the Cargo.lock at that commit. See the layer README.
MENDER_CONNECT_RS_GIT_URI ??= ""
MENDER_CONNECT_RS_CRATES_INC ??= "mender-connect-rs-crates.inc"
# Immediate expansion: THISDIR is this file's directory only while it is parsed.
# nooelint: oelint.vars.mispell.unknown - defined here, used by EXTERNALSRC below
MENDER_CONNECT_RS_SOURCE_TREE := "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '..', '..', '..'))}"

# destsuffix=${BP} unpacks where every release's default S points (scarthgap:
# WORKDIR/BP, whinlatter and later: UNPACKDIR/BP), so S is not set here.
SRC_URI = "${@(d.getVar('MENDER_CONNECT_RS_GIT_URI') + ';destsuffix=${BP}') if d.getVar('MENDER_CONNECT_RS_GIT_URI') else ''}"

require ${MENDER_CONNECT_RS_CRATES_INC}

inherit cargo pkgconfig systemd externalsrc

# Tree mode: externalsrc builds ${S} = the enclosing checkout, out of tree in
# ${B} (cargo's target directory is ${B}/target); the crate:// entries are still
# fetched and unpacked. No symlinks are written into the checkout.
EXTERNALSRC ?= "${@'' if d.getVar('MENDER_CONNECT_RS_GIT_URI') else d.getVar('MENDER_CONNECT_RS_SOURCE_TREE')}"
# nooelint: oelint.vars.mispell.unknown - externalsrc.bbclass's variable
EXTERNALSRC_SYMLINKS ?= ""

# Coherence: the crates.inc must be made from exactly the Cargo.lock that is built,
# else cargo --frozen fails on a missing crate at best, or a stale list hides.
# A mismatch makes the recipe unbuildable, with the reason and the fix. At parse
# time, so that it also stops image builds and `bitbake -n` before any fetch.
# nooelint: oelint.task.noanonpython
python () {
    import hashlib
    crates_inc = d.getVar('MENDER_CONNECT_RS_CRATES_INC')
    if d.getVar('MENDER_CONNECT_RS_GIT_URI'):
        made_from = d.getVar('MENDER_CONNECT_RS_CRATES_SRCREV') or ''
        srcrev = d.getVar('SRCREV') or ''
        if made_from != srcrev:
            raise bb.parse.SkipRecipe("%s was made from the Cargo.lock of commit '%s', but SRCREV is '%s': run "
                     "meta-mender-connect-rs/scripts/gen-crates-inc --rev %s --output <file> and set "
                     "MENDER_CONNECT_RS_CRATES_INC to it" % (crates_inc, made_from, srcrev, srcrev))
        return
    tree = d.getVar('EXTERNALSRC')
    if not tree:
        raise bb.parse.SkipRecipe("neither MENDER_CONNECT_RS_GIT_URI (release mode) nor EXTERNALSRC (tree mode) is set")
    lock = os.path.join(tree, 'Cargo.lock')
    bb.parse.mark_dependency(d, lock)
    try:
        with open(lock, 'rb') as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError as e:
        raise bb.parse.SkipRecipe("tree mode builds %s, which has no readable Cargo.lock: %s" % (tree, e))
    if digest != d.getVar('MENDER_CONNECT_RS_CRATES_LOCK_SHA256'):
        raise bb.parse.SkipRecipe("%s is not made from %s (sha256 %s): run "
                 "meta-mender-connect-rs/scripts/gen-crates-inc" % (crates_inc, lock, digest))
}

# Settings of meta-mender's mender-connect recipe, same names and defaults.
MENDER_CONNECT_SHELL ??= "/bin/sh"
MENDER_CONNECT_USER ??= "nobody"

# The features come only from PACKAGECONFIG. They go into CARGO_BUILD_FLAGS and
# not into the PACKAGECONFIG options because scarthgap's cargo class does not
# pass PACKAGECONFIG_CONFARGS to cargo.
# Same default as the crate: D-Bus auth, with the standalone device auth
# (the agent authenticates itself, no Mender client) compiled in as well.
PACKAGECONFIG ??= "dbus-auth standalone"
# Like meta-mender's Go recipe, depend on mender-auth (the D-Bus token provider)
# when meta-mender is in the build; without it, nothing provides mender-auth.
# (A function call: PACKAGECONFIG flags are split at commas before expansion.)
def mender_connect_rs_auth_rdepends(d):
    return 'mender-auth' if 'mender' in (d.getVar('BBFILE_COLLECTIONS') or '').split() else ''

PACKAGECONFIG[dbus-auth] = ",,dbus,${@mender_connect_rs_auth_rdepends(d)}"
# No CA list is compiled in: https to the server is verified against the
# image's CA bundle (/etc/ssl/certs/ca-certificates.crt) plus ServerCertificate.
RDEPENDS:${PN} += "ca-certificates"
PACKAGECONFIG[standalone] = ""
def mender_connect_rs_cargo_features(d):
    features = bb.utils.filter('PACKAGECONFIG', 'dbus-auth standalone', d).split()
    return '--features ' + ','.join(features) if features else ''

CARGO_BUILD_FLAGS:append = " -p mender-connect --no-default-features ${@mender_connect_rs_cargo_features(d)}"

# The workspace's release profile strips the binary; OE strips it itself and
# splits the debug symbols into ${PN}-dbg.
export CARGO_PROFILE_RELEASE_STRIP = "false"

SYSTEMD_AUTO_ENABLE ?= "enable"
SYSTEMD_SERVICE:${PN} = "mender-connect.service"

# As meta-mender does: a mender-connect.conf added to SRC_URI by a bbappend is
# the base, and only the keys it lacks are filled from the variables above.
python do_prepare_mender_connect_conf() {
    import json

    unpackdir = d.getVar("UNPACKDIR") or d.getVar("WORKDIR")
    conf = {}
    src_conf = os.path.join(unpackdir, "mender-connect.conf")
    if os.path.exists(src_conf):
        with open(src_conf) as fd:
            conf = json.load(fd)
    conf.setdefault("ShellCommand", d.getVar("MENDER_CONNECT_SHELL"))
    conf.setdefault("User", d.getVar("MENDER_CONNECT_USER"))
    with open(os.path.join(d.getVar("B"), "mender-connect.conf"), "w") as fd:
        json.dump(conf, fd, indent=4, sort_keys=True)
        fd.write("\n")
}
addtask prepare_mender_connect_conf after do_compile before do_install
do_prepare_mender_connect_conf[doc] = "Writes mender-connect.conf from a SRC_URI base file and MENDER_CONNECT_SHELL/MENDER_CONNECT_USER"
do_prepare_mender_connect_conf[vardeps] += "MENDER_CONNECT_SHELL MENDER_CONNECT_USER"

do_install:append() {
    install -d ${D}${sysconfdir}/mender
    install -m 0600 ${B}/mender-connect.conf ${D}${sysconfdir}/mender/mender-connect.conf
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -d ${D}${systemd_system_unitdir}
        install -m 0644 ${S}/agent/support/mender-connect.service ${D}${systemd_system_unitdir}/
    fi
}

CONFFILES:${PN} = "${sysconfdir}/mender/mender-connect.conf"

# Swaps in for meta-mender's Go package of the same name.
RPROVIDES:${PN} = "mender-connect"
RCONFLICTS:${PN} = "mender-connect"
RREPLACES:${PN} = "mender-connect"

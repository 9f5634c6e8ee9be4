#!/usr/bin/env bash
# Installs the system packages Kybernate builds and tests against, on Debian 12 (root).
#
# - bookworm: build tools, containerd 1.6 (system /usr/bin), runc, iptables (CRIU's network
#   locking runs iptables-restore), busybox-static (the test image), util-linux, pkg-config, valgrind
#   (the addon leak check in the suite), iproute2 and containernetworking-plugins (the network namespace
#   and CNI bridge a workload behind the activator gets, as a pod would), nginx-light (the activator's
#   proxy baseline in `make bench`; its package does not start it where no init system runs).
# - trixie: CRIU 4.1 + libcriu-dev (bookworm's CRIU 3.17 fails `criu check` on this kernel), which brings
#   trixie's libc; then sid: CRIU 4.2 on top (4.1 cannot dump TCP sockets on kernels >= 6.16: it fails on
#   getsockopt(SO_PASSCRED) of inet sockets, which those kernels refuse; 4.2.1 dumps and restores them).
#   The trixie/sid suites are added with a low pin so nothing else is upgraded by accident.
# - trixie: Ceph's radosgw 18.2, the S3 server the storage tests start with its standalone SQLite backend
#   (dbstore, no Ceph cluster; test/harness/s3.ts). Its libraries come from trixie too (libssl3t64,
#   libcurl4t64 ... replace bookworm's) and /usr/bin/python3 becomes 3.13, which node-gyp 11 builds the
#   addon with.
# - trixie: Docker Engine 26.1 (docker.io, docker-cli; tini for `docker run --init`), the client of the Docker
#   e2e suite and `make bench`, which start their own dockerd against a test containerd. It needs nothing newer
#   than bookworm's containerd 1.6 and runc, which stay. Its postinst would start the packaged daemon
#   (invoke-rc.d, or systemd): a policy-rc.d that denies it is in place for the install (unless the machine
#   has one), and on systemd hosts the units are then disabled. A machine that has dockerd and docker
#   already (e.g. docker-ce) keeps them.
#
# Idempotent: does nothing but a few dpkg queries when everything is already in place.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

SOURCES=/etc/apt/sources.list.d/kybernate-trixie-sid.sources
PIN=/etc/apt/preferences.d/kybernate-trixie-sid
BOOKWORM_PKGS=(build-essential python3 containerd runc iptables busybox-static util-linux pkg-config valgrind
  iproute2 containernetworking-plugins nginx-light)
TRIXIE_PKGS=(criu libcriu-dev)
DOCKER_PKGS=(docker.io docker-cli)
POLICY_RC=/usr/sbin/policy-rc.d
CRIU_MIN=4.2

say() { printf 'setup-system: %s\n' "$*"; }
die() { printf 'setup-system: ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (installs apt packages)"
command -v apt-get >/dev/null || die "apt-get not found: Debian 12 is required"

installed() { # pkg -> 0 when the package is installed
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# The Debian mirror URI of the existing sources (the snapshot/mirror the machine is set up with).
debian_uri() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
      /etc/apt/sources.list.d/debian.sources)
  fi
  printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

write_if_changed() { # path content -> 0 when the file was (re)written
  if [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; then return 1; fi
  printf '%s\n' "$2" >"$1"
  return 0
}

need_update=0
uri=$(debian_uri)
if write_if_changed "$SOURCES" "Types: deb
URIs: $uri
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"; then
  need_update=1
fi
# trixie at 100: its packages are only installed when asked for (-t trixie); plain installs and
# upgrades keep taking bookworm, and packages already taken from trixie stay on trixie.
# sid below 100: never a candidate for an installed package (at 100 it would upgrade libc6 & co.
# to sid on the next `apt-get upgrade`); it is only used for `apt-get download containerd/sid`.
write_if_changed "$PIN" "Package: *
Pin: release n=trixie
Pin-Priority: 100

Package: *
Pin: release n=sid
Pin-Priority: 50" || true

missing=()
for p in "${BOOKWORM_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
criu_ok=0
if installed criu && installed libcriu-dev; then
  v=$(dpkg-query -W -f='${Version}' criu)
  dpkg --compare-versions "$v" ge "$CRIU_MIN" && criu_ok=1
fi

# Index files older than the sources file (or absent) mean the trixie/sid lists were never fetched.
if ! ls /var/lib/apt/lists/*_dists_trixie_InRelease >/dev/null 2>&1 ||
   ! ls /var/lib/apt/lists/*_dists_sid_InRelease >/dev/null 2>&1; then
  need_update=1
fi
radosgw_ok=0
installed radosgw && radosgw_ok=1
docker_ok=0
command -v dockerd >/dev/null && command -v docker >/dev/null && docker_ok=1
if [ ${#missing[@]} -gt 0 ] || [ $criu_ok -eq 0 ] || [ $radosgw_ok -eq 0 ] || [ $docker_ok -eq 0 ]; then need_update=1; fi

if [ $need_update -eq 1 ]; then
  say "apt-get update"
  apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # nginx is only the bench's baseline, started by the bench on a port of its own: where an init
  # system started the package's service on port 80, it is stopped and not started at boot.
  if [[ " ${missing[*]} " == *" nginx-light "* ]] && command -v systemctl >/dev/null &&
     systemctl is-active --quiet nginx 2>/dev/null; then
    systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi
if [ $criu_ok -eq 0 ]; then
  # Upgrades libc6 to trixie's (2.41) and the libraries CRIU needs: expected. sid's CRIU then needs
  # nothing newer than that libc (only its own libraries and libnet/libnl).
  say "installing ${TRIXIE_PKGS[*]} from trixie, then CRIU from sid"
  apt-get install -y -qq --no-install-recommends -t trixie "${TRIXIE_PKGS[@]}" >/dev/null
  apt-get install -y -qq --no-install-recommends -t sid "${TRIXIE_PKGS[@]}" >/dev/null
fi

if [ $radosgw_ok -eq 0 ]; then
  # radosgw needs libnl-route-3-200, which must be the version of the libnl-3-200 already there (sid's,
  # brought by CRIU 4.2): trixie's would need trixie's libnl-3-200, and apt finds no solution.
  say "installing radosgw from trixie"
  nl=$(dpkg-query -W -f='${Version}' libnl-3-200 2>/dev/null || true)
  apt-get install -y -qq --no-install-recommends -t trixie radosgw ${nl:+"libnl-route-3-200=$nl"} >/dev/null
fi

if [ $docker_ok -eq 0 ]; then
  say "installing ${DOCKER_PKGS[*]} from trixie (its daemon is not started)"
  policy_added=0
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\n# kybernate setup-system.sh: no service starts while docker.io is installed\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    policy_added=1
  fi
  rc=0
  apt-get install -y -qq --no-install-recommends -t trixie "${DOCKER_PKGS[@]}" >/dev/null || rc=$?
  [ $policy_added -eq 0 ] || rm -f "$POLICY_RC"
  [ $rc -eq 0 ] || die "installing ${DOCKER_PKGS[*]} failed (apt-get exit $rc)"
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket >/dev/null 2>&1 || true
  fi
fi

command -v containerd >/dev/null || die "containerd missing after install"
command -v dockerd >/dev/null && command -v docker >/dev/null || die "dockerd or docker missing after install"
command -v radosgw >/dev/null && command -v radosgw-admin >/dev/null || die "radosgw missing after install"
command -v runc >/dev/null || die "runc missing after install"
command -v iptables-restore >/dev/null || die "iptables-restore missing after install"
[ -x /bin/busybox ] || die "/bin/busybox missing after install"
[ -x /usr/lib/cni/bridge ] || die "the CNI bridge plugin (/usr/lib/cni/bridge) missing after install"
# No `| grep -q` / `| head`: an early exit of the reader SIGPIPEs the writer, failing under pipefail.
criu_version=$(criu --version | awk '/^Version:/ { print $2 }')
dpkg --compare-versions "$criu_version" ge "$CRIU_MIN" || die "CRIU >= $CRIU_MIN expected, got '${criu_version}'"
say "system packages ok (containerd $(containerd --version | awk '{ print $3 }'), criu $criu_version, radosgw $(dpkg-query -W -f='${Version}' radosgw), $(dockerd --version))"

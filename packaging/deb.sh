#!/usr/bin/env bash
# Builds uwsgi-plugin-metrics-prometheus_<version>_<arch>.deb against the uwsgi-core installed on
# this machine, for machines that have that same uwsgi-core and no Rust toolchain.
#
#   bash packaging/deb.sh [OUTDIR]        (default: dist/; prints the .deb's path last)
#
# Needs: dpkg-dev, a Rust toolchain, libclang-dev and the headers uwsgi.h includes (t/setup.sh
# installs them all), and Debian's uwsgi-core. CARGO_TARGET_DIR is honoured.
#
# The package Depends on the uwsgi-abi-<hash> virtual package that this uwsgi-core Provides, read
# from dpkg: apt and dpkg then refuse to install it next to any other uWSGI build, as they do for
# Debian's own plugins; the plugin itself would refuse to load into one anyway (build.rs).
#
# Built with dpkg-deb and dpkg-shlibdeps, not cargo-deb: the Depends line must come from the
# installed uwsgi-core at build time, the plugin needs a build environment (UWSGI_BIN) of its own,
# and dpkg-dev is already on every machine that can build this, while cargo-deb would be one more
# tool to compile (`cargo install`) on CI.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=$(realpath -m "${1:-dist}")

PKG=uwsgi-plugin-metrics-prometheus
log() { printf '[deb] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

for tool in dpkg-deb dpkg-shlibdeps cargo python3 strip; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install dpkg-dev binutils python3; Rust via rustup)"
done
status=$(dpkg-query -W -f='${Status}' uwsgi-core 2>/dev/null || true)
[[ $status == 'install ok installed' ]] || die "uwsgi-core is not installed: apt-get install uwsgi-core"
CORE_VERSION=$(dpkg-query -W -f='${Version}' uwsgi-core)
ABI=$(dpkg-query -W -f='${Provides}' uwsgi-core | tr ',' '\n' | grep -oE 'uwsgi-abi-[0-9a-f]+' || true)
[[ $(wc -w <<<"$ABI") == 1 ]] || die "uwsgi-core $CORE_VERSION provides no single uwsgi-abi-* package (Provides: $ABI)"
# The binary the package installs, from its file list: the plugin is built for it and no other.
UWSGI_BIN=$(dpkg-query -L uwsgi-core | grep -x '/usr/bin/uwsgi-core')
VERSION=$(cargo metadata --no-deps --format-version 1 --manifest-path Cargo.toml |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "metrics_prometheus"))')
ARCH=$(dpkg --print-architecture)
COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || cat COMMIT 2>/dev/null || echo unknown)
# Reproducible dates and maintainer: the commit's (or now), and DEBFULLNAME/DEBEMAIL when set.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH
MAINTAINER="${DEBFULLNAME:-metrics_prometheus maintainers} <${DEBEMAIL:-maintainers@users.noreply.b-seed-a00efb0e.example}>"

log "building $PKG $VERSION ($ARCH, commit $COMMIT) for uwsgi-core $CORE_VERSION ($ABI, $UWSGI_BIN)"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
UWSGI_BIN=$UWSGI_BIN CARGO_TARGET_DIR=$TARGET cargo build --release --lib --locked
SO=$TARGET/release/libmetrics_prometheus.so

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
umask 022
R=$WORK/root
SHARE=$R/usr/share/$PKG
DOC=$R/usr/share/doc/$PKG
install -d "$R/DEBIAN" "$R/usr/lib/uwsgi/plugins" "$SHARE/dashboards" "$SHARE/rules" \
  "$SHARE/python/metrics_prometheus" "$DOC"
# The name uWSGI derives from `plugin = metrics_prometheus` in its plugin directory.
install -m 0644 "$SO" "$R/usr/lib/uwsgi/plugins/metrics_prometheus_plugin.so"
# Debug symbols are 10 times the code; the dynamic symbols uWSGI looks up stay.
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$R/usr/lib/uwsgi/plugins/metrics_prometheus_plugin.so"
install -m 0644 dashboards/uwsgi.json "$SHARE/dashboards/"
install -m 0644 rules/uwsgi.rules.yml rules/uwsgi.rules.test.yml "$SHARE/rules/"
install -m 0644 python/metrics_prometheus/__init__.py "$SHARE/python/metrics_prometheus/"
gzip -9n <README.md >"$DOC/README.md.gz"
gzip -9n <CHANGELOG.md >"$DOC/CHANGELOG.md.gz"

# copyright: the project's, with the crates linked into the plugin (normal dependencies of the
# plugin crate, transitively; build and dev dependencies are not in the binary).
cargo metadata --format-version 1 --locked --filter-platform "$(rustc -vV | sed -n 's/^host: //p')" |
  python3 -c '
import json, sys
m = json.load(sys.stdin)
pkgs = {p["id"]: p for p in m["packages"]}
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
root = next(i for i, p in pkgs.items() if p["name"] == "metrics_prometheus")
seen, todo = set(), [root]
while todo:
    for d in nodes[todo.pop()]["deps"]:
        if any(k["kind"] is None for k in d["dep_kinds"]) and d["pkg"] not in seen:
            seen.add(d["pkg"])
            todo.append(d["pkg"])
crates = sorted((pkgs[i]["name"], pkgs[i]["version"], pkgs[i]["license"] or "see its repository")
                for i in seen if pkgs[i]["source"])
text = open(sys.argv[1]).read()
assert " @CRATES@\n" in text
print(text.replace(" @CRATES@\n", "".join(" %s %s: %s\n" % c for c in crates)), end="")
' packaging/copyright >"$DOC/copyright"

# A native package's changelog, in Debian's format (lintian parses it); users' notes are
# CHANGELOG.md.gz beside it.
{
  printf '%s (%s) unstable; urgency=medium\n\n' "$PKG" "$VERSION"
  printf '  * metrics_prometheus %s, commit %s,\n' "$VERSION" "$COMMIT"
  printf '    built for uwsgi-core %s\n    (%s).\n' "$CORE_VERSION" "$ABI"
  printf '  * What changed: CHANGELOG.md.gz in this directory.\n\n'
  printf ' -- %s  %s\n' "$MAINTAINER" "$(date -R -u -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$DOC/changelog.gz"

# Shared libraries the plugin links (libc, libgcc_s); uWSGI's own symbols come from the
# executable that loads it, so dpkg-shlibdeps's notes about them are expected and dropped.
mkdir -p "$WORK/src/debian"
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PKG" "$PKG" >"$WORK/src/debian/control"
SHLIBS=$(cd "$WORK/src" && dpkg-shlibdeps -O --warnings=0 "$R/usr/lib/uwsgi/plugins/metrics_prometheus_plugin.so" |
  sed -n 's/^shlibs:Depends=//p')
[[ -n $SHLIBS ]] || die "dpkg-shlibdeps found no shared library dependency"

(cd "$R" && find usr -type f -print0 | sort -z | xargs -0 md5sum) >"$R/DEBIAN/md5sums"
cat >"$R/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$R" | cut -f1)
Depends: $ABI, $SHLIBS
Suggests: python3-prometheus-client, prometheus
Section: httpd
Priority: optional
Description: Prometheus metrics for uWSGI, from inside uWSGI
 A uWSGI plugin (load it with "plugin = metrics_prometheus") that exports
 every figure of uWSGI's stats server as Prometheus metrics, request latency
 histograms, worker exit reasons, and a Python application's prometheus_client
 metrics kept in uWSGI's shared memory. It serves them from the uWSGI master
 (--prometheus-server) or as a route action, in the Prometheus text,
 OpenMetrics and protobuf formats.
 .
 Built from commit $COMMIT for uwsgi-core $CORE_VERSION
 ($ABI).
 The Grafana dashboard, the Prometheus rules and the Python module for
 application metrics are in /usr/share/$PKG.
EOF
find "$R" -type d -exec chmod 0755 {} +
mkdir -p "$OUT"
DEB=$OUT/${PKG}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$R" "$DEB" >&2
echo "$DEB"

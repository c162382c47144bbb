#!/usr/bin/env bash
# Builds a release's artefacts from the committed tree (HEAD), with SHA-256 sums:
#
#   bash packaging/release.sh [OUTDIR]        (default: dist/)
#
#   metrics_prometheus-<version>.tar.gz    the source, Cargo.lock, every crate vendored
#                                          (`cargo vendor`) and the commit in COMMIT: it builds
#                                          with `cargo build --offline`, no network, no git
#   uwsgi-plugin-metrics-prometheus_<version>_<arch>.deb   packaging/deb.sh (this machine's
#                                          uwsgi-core)
#   uwsgi_metrics_prometheus-<version>.tar.gz, ...-py3-none-any.whl   the Python module
#   SHA256SUMS                             `sha256sum -c SHA256SUMS` checks them
#
# PYTHON: an interpreter with PyPA's `build` (default: the tools venv's, from t/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-dist}")
log() { printf '[release] %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

PYTHON=${PYTHON:-${MP_TOOLS:+$MP_TOOLS/bin/python}}
PYTHON=${PYTHON:-python3}
"$PYTHON" -c 'import build' 2>/dev/null || die "$PYTHON has no PyPA build: pip install build"

VERSION=$(cargo metadata --no-deps --format-version 1 --manifest-path Cargo.toml |
  python3 -c 'import json, sys; print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "metrics_prometheus"))')
PY_VERSION=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' python/pyproject.toml)
[[ $PY_VERSION == "$VERSION" ]] || die "python/pyproject.toml has version $PY_VERSION, Cargo.toml $VERSION"
grep -qx "## $VERSION" CHANGELOG.md || die "CHANGELOG.md has no '## $VERSION' section"
# The artefacts say which commit they are: uncommitted changes would not be in them.
[[ -z $(git status --porcelain --untracked-files=no) ]] || log "warning: uncommitted changes are not in the release (it is built from HEAD)"
COMMIT=$(git rev-parse --short=12 HEAD)
NAME=metrics_prometheus-$VERSION
log "release $VERSION, commit $COMMIT, into $OUT"
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Source tarball: the committed tree, the commit build.rs cannot ask git for, vendored crates and
# the cargo configuration `cargo vendor` prints, which points crates.io at vendor/.
git archive --format=tar --prefix="$NAME/" HEAD | tar -x -C "$WORK"
echo "$COMMIT" >"$WORK/$NAME/COMMIT"
mkdir -p "$WORK/$NAME/.cargo"
(cd "$WORK/$NAME" && cargo vendor --locked --versioned-dirs vendor >.cargo/config.toml)
# Fixed owners, modes order and dates: the same commit gives the same tarball.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$(git log -1 --format=%ct)" \
  -C "$WORK" -cf - "$NAME" | gzip -9n >"$OUT/$NAME.tar.gz"

bash packaging/deb.sh "$OUT" >/dev/null

# The Python module, built from a copy (setuptools writes build/ and *.egg-info beside it).
git archive --format=tar HEAD python | tar -x -C "$WORK"
"$PYTHON" -m build --sdist --wheel --outdir "$OUT" "$WORK/python" >&2

cd "$OUT"
files=("$NAME.tar.gz" "uwsgi-plugin-metrics-prometheus_${VERSION}_$(dpkg --print-architecture).deb"
  "uwsgi_metrics_prometheus-$VERSION.tar.gz" "uwsgi_metrics_prometheus-$VERSION-py3-none-any.whl")
for f in "${files[@]}"; do [[ -f $f ]] || die "missing artefact $f"; done
sha256sum "${files[@]}" >SHA256SUMS
log "done:"
sed 's/^/  /' SHA256SUMS >&2

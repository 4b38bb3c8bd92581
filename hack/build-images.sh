#!/usr/bin/env bash
# Builds the worker and operator images from Dockerfile.worker / Dockerfile.operator without a Docker engine
# or a registry, and writes them as OCI archives that `ctr -n k8s.io images import` loads under their names.
#   hack/build-images.sh    build what is missing, then print on stdout (logs go to stderr):
#     LIVENEXUS_WORKER_IMAGE=localhost/livenexus-worker:<tag>      LIVENEXUS_WORKER_ARCHIVE=<dir>/worker-<tag>.tar
#     LIVENEXUS_OPERATOR_IMAGE=localhost/livenexus-operator:<tag>  LIVENEXUS_OPERATOR_ARCHIVE=<dir>/operator-<tag>.tar
#     LIVENEXUS_IMAGES_BUILT=0|1  and  LIVENEXUS_BUILDAH=<global buildah options of the storage holding the images>
# <tag> is the first 12 hex digits of a sha256 over the image's build inputs (its Dockerfile, .dockerignore,
# pyproject.toml, README.md, common/, worker/, operator/, for the operator console/livenexus_console and console/dist,
# and the base image key), so an unchanged tree takes the fast path: nothing but hashing and two file tests.
#
# How (everything cached under $LIVENEXUS_IMAGES, default ~/.cache/livenexus/images):
#  - The base image is made here, since no registry may be reachable: mmdebstrap (minbase + python3,
#    python3-venv, ca-certificates) from the host's own Debian sources, imported into buildah as
#    localhost/livenexus-base:bookworm and passed as BASE_IMAGE. Built once per package list.
#  - `buildah bud --layers` with the runc runtime; the build stage is tagged too (<name>-build:<tag>) so
#    its layers (the dependency download in particular) survive the pruning of older builds.
#  - pip's CA bundle (PIP_CERT, else pip's configured `cert`) goes in as the build secret `pipca`: a
#    TLS-intercepting proxy works, and the bundle never lands in a layer.
#  - Older tags' archives and images are removed afterwards, so disk use stays at one build per image.
# Overrides: STORAGE_DRIVER (overlay|vfs), LIVENEXUS_BUILD_ISOLATION (oci|chroot), LIVENEXUS_BUILDAH_ROOT,
# LIVENEXUS_DEBIAN_SOURCES (a deb822 sources file for the base, instead of the host's).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${LIVENEXUS_IMAGES:-$HOME/.cache/livenexus/images}
SUITE=bookworm
BASE_IMAGE=localhost/livenexus-base:$SUITE
BASE_PACKAGES=python3,python3-venv,ca-certificates
# Trimmed like the slim Python images: no manuals, docs (but their copyright files) or translations.
BASE_DPKGOPTS=('path-exclude=/usr/share/man/*' 'path-exclude=/usr/share/doc/*'
               'path-include=/usr/share/doc/*/copyright' 'path-exclude=/usr/share/locale/*'
               'path-exclude=/usr/share/info/*')
RUNTIME=/usr/sbin/runc

log() { echo "build-images: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- tags (the fast path needs nothing else)
[ -f "$ROOT/console/dist/index.html" ] \
  || die "console/dist is missing: build the console first (cd console && npm ci && npm run build; hack/bootstrap.sh does it)"

BASE_KEY=$(printf '%s\n' "$SUITE" minbase "$BASE_PACKAGES" "${BASE_DPKGOPTS[@]}" | sha256sum | cut -c1-12)

# sha256 over the files' paths and contents, as the build context sees them (no caches, no egg-info).
tree_hash() {  # tree_hash <extra-line> <path>...
  local extra=$1; shift
  { echo "$extra"
    (cd "$ROOT" && find "$@" -type f ! -path '*/__pycache__/*' ! -name '*.pyc' ! -path '*.egg-info/*' -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -c1-12
}
COMMON=(.dockerignore pyproject.toml README.md common worker operator)
WORKER_TAG=$(tree_hash "base $BASE_KEY" Dockerfile.worker "${COMMON[@]}")
OPERATOR_TAG=$(tree_hash "base $BASE_KEY" Dockerfile.operator "${COMMON[@]}" console/livenexus_console console/dist)
WORKER_IMAGE=localhost/livenexus-worker:$WORKER_TAG
OPERATOR_IMAGE=localhost/livenexus-operator:$OPERATOR_TAG
WORKER_ARCHIVE=$CACHE/worker-$WORKER_TAG.tar
OPERATOR_ARCHIVE=$CACHE/operator-$OPERATOR_TAG.tar
BUILT=0

print_env() {
  echo "LIVENEXUS_WORKER_IMAGE=$WORKER_IMAGE"
  echo "LIVENEXUS_WORKER_ARCHIVE=$WORKER_ARCHIVE"
  echo "LIVENEXUS_OPERATOR_IMAGE=$OPERATOR_IMAGE"
  echo "LIVENEXUS_OPERATOR_ARCHIVE=$OPERATOR_ARCHIVE"
  echo "LIVENEXUS_IMAGES_BUILT=$BUILT"
  echo "LIVENEXUS_BUILDAH=$(cat "$CACHE/buildah-options" 2>/dev/null || true)"
}

[ -f "$WORKER_ARCHIVE" ] && [ -f "$OPERATOR_ARCHIVE" ] && { print_env; exit 0; }

# ---------------------------------------------------------------- slow path: one build at a time
for tool in buildah mmdebstrap "$RUNTIME"; do
  command -v "$tool" >/dev/null || die "$tool not found (apt-get install buildah mmdebstrap runc; hack/bootstrap.sh does it)"
done
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap and buildah are run rootful here)"
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
# Another run may have built the same tags while this one waited for the lock.
[ -f "$WORKER_ARCHIVE" ] && [ -f "$OPERATOR_ARCHIVE" ] && { print_env; exit 0; }
T0=$(now)

# Storage: overlay (kernel overlayfs, copy-on-write layers) where the cache's file system can carry an
# overlay upper dir; vfs (a full copy per layer: slower, bigger, works anywhere) where it cannot, e.g. when
# this runs inside a container whose own root is already an overlay. Each driver gets its own store. On the
# development VM ~/.cache is ext4, so overlay works.
driver=${STORAGE_DRIVER:-}
if [ -z "$driver" ]; then
  driver=vfs
  probe_root="$CACHE/buildah-overlay-probe"
  if buildah --root "$probe_root" --runroot "$probe_root.run" --storage-driver overlay info >/dev/null 2>&1; then
    driver=overlay
  fi
  rm -rf "$probe_root" "$probe_root.run"
fi
STORE=${LIVENEXUS_BUILDAH_ROOT:-$HOME/.cache/livenexus/buildah}/$driver
BUILDAH_OPTS=(--root "$STORE/root" --runroot "$STORE/run" --storage-driver "$driver")
BUILDAH=(buildah "${BUILDAH_OPTS[@]}")
log "buildah $(buildah --version | awk '{print $3}'), storage driver $driver in $STORE"

# ---------------------------------------------------------------- base image
# The host's Debian entries for $SUITE (deb822 *.sources and one-line *.list), so the chroot uses the same
# mirror the host does (no mirror written down here).
host_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" }
      { out = ""; types = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i; if (line ~ /^[ \t]*#/) continue
          out = out line "\n"; low = tolower(line)
          if (low ~ /^types:/) types = substr(line, 7)
          if (low ~ /^suites:/) suites = substr(line, 8)
          if (low ~ /^enabled:/) enabled = tolower(substr(line, 9))
        }
        if (enabled ~ /no/ || types !~ /(^|[ \t])deb([ \t]|$)/) next
        n = split(suites, s, /[ \t]+/); ok = 0
        for (j = 1; j <= n; j++) {
          if (s[j] == "") continue
          if (s[j] != suite && index(s[j], suite "-") != 1) { ok = 0; break }
          ok = 1
        }
        if (ok) printf "%s\n", out }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENT... -> Types/URIs/Suites/Components
    awk -v suite="$SUITE" '$1 == "deb" {
        i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        uri = $i; s = $(i + 1); comps = ""
        for (j = i + 2; j <= NF; j++) comps = comps (comps == "" ? "" : " ") $j
        if (s == suite || index(s, suite "-") == 1)
          printf "Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n\n", uri, s, comps }' "$f"
  done
}

BASE_TAR=$CACHE/base-$SUITE-$BASE_KEY.tar
if [ ! -f "$BASE_TAR" ]; then
  t=$(now)
  sources=$(mktemp --suffix=.sources)
  tmp_tar=$CACHE/.tmp-$$-$(basename "$BASE_TAR")  # mmdebstrap picks its output format by the .tar suffix
  if [ -n "${LIVENEXUS_DEBIAN_SOURCES:-}" ]; then cp "$LIVENEXUS_DEBIAN_SOURCES" "$sources"; else host_sources > "$sources"; fi
  [ -s "$sources" ] || die "no $SUITE entries in the host's /etc/apt/sources.list(.d): point LIVENEXUS_DEBIAN_SOURCES at a deb822 file for $SUITE"
  dpkgopts=(); for o in "${BASE_DPKGOPTS[@]}"; do dpkgopts+=(--dpkgopt="$o"); done
  log "making the base image ($SUITE minbase + $BASE_PACKAGES) with mmdebstrap"
  # Check-Valid-Until off: the host's mirror may be a dated snapshot (as the host's apt config allows).
  # resolv.conf/hostname would leak the build host into the image; the runtime provides both.
  # shellcheck disable=SC2016  # "$1" is expanded by mmdebstrap's hook, not here
  if ! mmdebstrap --variant=minbase --include="$BASE_PACKAGES" "${dpkgopts[@]}" \
        --aptopt='Acquire::Check-Valid-Until "false"' --aptopt='Acquire::Retries "5"' \
        --customize-hook='rm -f "$1"/etc/resolv.conf "$1"/etc/hostname' \
        "$SUITE" "$tmp_tar" "$sources" >&2; then
    rm -f "$sources" "$tmp_tar"; die "mmdebstrap failed"
  fi
  rm -f "$sources"
  # Device nodes are the container runtime's business (it mounts /dev); an image layer should not carry them.
  tar --delete --wildcards -f "$tmp_tar" './dev/?*'
  mv -f "$tmp_tar" "$BASE_TAR"
  log "base tar made in $(since "$t") s: $BASE_TAR"
fi
if [ "$("${BUILDAH[@]}" inspect --type image --format '{{index .OCIv1.Config.Labels "livenexus.base.key"}}' \
        "$BASE_IMAGE" 2>/dev/null)" != "$BASE_KEY" ]; then
  t=$(now)
  c=$("${BUILDAH[@]}" from scratch)
  "${BUILDAH[@]}" add "$c" "$BASE_TAR" / >&2
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd '["/bin/bash"]' --label "livenexus.base.key=$BASE_KEY" "$c"
  "${BUILDAH[@]}" commit -q --rm "$c" "$BASE_IMAGE" >/dev/null
  log "imported $BASE_IMAGE in $(since "$t") s"
fi

# ---------------------------------------------------------------- isolation
# `oci` runs each RUN step with runc in its own namespaces, like a Docker build; it needs a kernel and
# cgroup setup that lets runc create containers. `chroot` only chroots (no new namespaces besides mount),
# which also works nested in an unprivileged container. Probe runc once, fall back to chroot. On the
# development VM (root, cgroup v1 hierarchy, ext4) both work and oci is used. --network host on every step:
# the steps need the network (pip), and host networking needs no CNI configuration for buildah.
isolation=${LIVENEXUS_BUILD_ISOLATION:-}
if [ -z "$isolation" ]; then
  isolation=chroot
  c=$("${BUILDAH[@]}" from --pull-never "$BASE_IMAGE")
  if "${BUILDAH[@]}" run --isolation oci --runtime "$RUNTIME" --network host "$c" true >/dev/null 2>&1; then
    isolation=oci
  fi
  "${BUILDAH[@]}" rm "$c" >/dev/null
fi
log "isolation $isolation (runtime $RUNTIME)"

# ---------------------------------------------------------------- the CA bundle pip uses, as a build secret
ca=${PIP_CERT:-}
for py in "$ROOT/.venv/bin/python" python3; do
  [ -z "$ca" ] || break
  command -v "$py" >/dev/null && ca=$("$py" -m pip config get global.cert 2>/dev/null || true)
done
secret=()
if [ -n "$ca" ] && [ -s "$ca" ]; then
  secret=(--secret "id=pipca,src=$ca")
  log "pip CA bundle $ca passed as build secret pipca"
fi

# ---------------------------------------------------------------- the images
build() {  # build <name> <tag> <archive>
  local name=$1 tag=$2 archive=$3 t
  local ref=localhost/livenexus-$name:$tag
  [ -f "$archive" ] && { log "$ref: archive exists"; return; }
  t=$(now)
  local bud=("${BUILDAH[@]}" bud --runtime "$RUNTIME" --isolation "$isolation" --network host --pull-never
             --layers --build-arg "BASE_IMAGE=$BASE_IMAGE" "${secret[@]}" -f "$ROOT/Dockerfile.$name")
  # The build stage first, under its own tag (keeps its cached layers from being pruned below), then the
  # image itself, which reuses every layer of the build stage from the cache.
  "${bud[@]}" --target build -t "localhost/livenexus-$name-build:$tag" "$ROOT" >&2 || die "building $ref (build stage) failed"
  "${bud[@]}" -t "$ref" "$ROOT" >&2 || die "building $ref failed"
  log "$ref built in $(since "$t") s"
  t=$(now)
  rm -f "$archive.tmp"
  "${BUILDAH[@]}" push -q "$ref" "oci-archive:$archive.tmp:$ref" >&2 || die "writing $archive failed"
  mv -f "$archive.tmp" "$archive"
  log "$archive written in $(since "$t") s ($(du -h "$archive" | cut -f1))"
  BUILT=1
}
build worker "$WORKER_TAG" "$WORKER_ARCHIVE"
build operator "$OPERATOR_TAG" "$OPERATOR_ARCHIVE"
printf '%s ' "${BUILDAH_OPTS[@]}" | sed 's/ $//' > "$CACHE/buildah-options.tmp"
mv -f "$CACHE/buildah-options.tmp" "$CACHE/buildah-options"

# ---------------------------------------------------------------- bound the disk use
for name in worker operator; do
  if [ "$name" = worker ]; then keep=$WORKER_TAG; else keep=$OPERATOR_TAG; fi
  for f in "$CACHE/$name"-????????????.tar "$CACHE/$name"-????????????.tar.tmp; do
    if [ -e "$f" ] && [ "$f" != "$CACHE/$name-$keep.tar" ]; then log "removing $f"; rm -f "$f"; fi
  done
  { "${BUILDAH[@]}" images --format '{{.Name}}:{{.Tag}}' 2>/dev/null || true; } \
    | { grep -E "^localhost/livenexus-$name(-build)?:" || true; } | { grep -v ":$keep\$" || true; } \
    | while read -r old; do log "removing image $old"; "${BUILDAH[@]}" rmi "$old" >/dev/null || true; done
done
for f in "$CACHE/base-$SUITE"-????????????.tar "$CACHE"/.tmp-*-base-*.tar; do
  if [ -e "$f" ] && [ "$f" != "$BASE_TAR" ]; then log "removing $f"; rm -f "$f"; fi
done
# Layers only older builds used (untagged, nothing built on them).
"${BUILDAH[@]}" rmi --prune >/dev/null 2>&1 || true
log "done in $(since "$T0") s"
print_env

#!/usr/bin/env bash
# Builds the real servers the integration tests run, from their Go modules, into a cache outside the tree
# keyed by version. Idempotent: a tool whose binary exists and runs is not rebuilt.
#   hack/install-tools.sh [livekit|kube|etcd|helm ...]   (default: all)
#   hack/install-tools.sh --print-env                     (LIVENEXUS_* variables pointing at the binaries)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${LIVENEXUS_TOOLS:-$HOME/.cache/livenexus/tools}

LIVEKIT_VERSION=v1.13.5
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.4
HELM_VERSION=v3.19.0

export CGO_ENABLED=0 GOFLAGS=-mod=mod

dir_of() {
  case "$1" in
    livekit) echo "$CACHE/livekit-$LIVEKIT_VERSION" ;;
    kube) echo "$CACHE/kube-$KUBE_VERSION" ;;
    etcd) echo "$CACHE/etcd-$ETCD_VERSION" ;;
    helm) echo "$CACHE/helm-$HELM_VERSION" ;;
  esac
}

# Build into a temp name and rename, so an interrupted build never leaves a binary that looks finished.
build() {  # build <wrapper-dir> <out> <package> [ldflags]
  local wrapper=$1 out=$2 pkg=$3 ldflags=${4:-}
  mkdir -p "$(dirname "$out")"
  (cd "$HERE/tools/$wrapper" && go build -p 2 -trimpath -ldflags "$ldflags" -o "$out.tmp.$$" "$pkg")
  mv -f "$out.tmp.$$" "$out"
}

ok() { [ -x "$1" ] && "$1" "${@:2}" >/dev/null 2>&1; }

install_livekit() {
  local bin; bin="$(dir_of livekit)/livekit-server"
  ok "$bin" --version || build livekit "$bin" github.com/livekit/livekit-server/cmd/server
}

install_kube() {
  local d; d=$(dir_of kube)
  local minor=${KUBE_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for c in kube-apiserver kube-controller-manager kubectl kube-scheduler kube-proxy kubelet; do
    ok "$d/$c" --version || build kube "$d/$c" "k8s.io/kubernetes/cmd/$c" "$ld"
  done
}

install_etcd() {
  local bin; bin="$(dir_of etcd)/etcd"
  ok "$bin" --version || build etcd "$bin" go.etcd.io/etcd/server/v3 "-s -w"
}

install_helm() {
  local d; d=$(dir_of helm)
  if ! ok "$d/helm" version --short; then
    mkdir -p "$d"
    local tmp; tmp=$(mktemp -d)
    GOBIN="$tmp" GOFLAGS= go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
    mv -f "$tmp/helm" "$d/helm"
    rmdir "$tmp"
  fi
}

print_env() {
  echo "LIVENEXUS_LIVEKIT_SERVER=$(dir_of livekit)/livekit-server"
  echo "LIVENEXUS_KUBE_APISERVER=$(dir_of kube)/kube-apiserver"
  echo "LIVENEXUS_KUBE_CONTROLLER_MANAGER=$(dir_of kube)/kube-controller-manager"
  echo "LIVENEXUS_KUBECTL=$(dir_of kube)/kubectl"
  echo "LIVENEXUS_KUBE_SCHEDULER=$(dir_of kube)/kube-scheduler"
  echo "LIVENEXUS_KUBE_PROXY=$(dir_of kube)/kube-proxy"
  echo "LIVENEXUS_KUBELET=$(dir_of kube)/kubelet"
  echo "LIVENEXUS_ETCD=$(dir_of etcd)/etcd"
  echo "LIVENEXUS_HELM=$(dir_of helm)/helm"
}

if [ "${1:-}" = "--print-env" ]; then print_env; exit 0; fi
tools=("$@"); [ ${#tools[@]} -gt 0 ] || tools=(livekit etcd kube helm)
for t in "${tools[@]}"; do
  case "$t" in
    livekit|kube|etcd|helm) start=$(date +%s); "install_$t"; echo "$t ready in $(( $(date +%s) - start ))s: $(dir_of "$t")" >&2 ;;
    *) echo "unknown tool: $t (livekit, kube, etcd, helm)" >&2; exit 2 ;;
  esac
done
print_env

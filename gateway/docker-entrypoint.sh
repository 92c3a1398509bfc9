#!/bin/bash
# The gateway image's entrypoint (installed as /usr/local/bin/satchel-gateway): renders the
# templates `make run` renders (devstack/satchel_devstack/stack.py, render_gateway_config), the
# multi-chunk location of satchel-concat.conf.template included, and runs nginx as it does.
#   satchel-gateway               render into NGINX_RUN_DIR, then exec nginx in the foreground
#   satchel-gateway render        render only, and print the main config's path (tests-infra)
#   satchel-gateway healthcheck   exit 0 when GET /healthz on GATEWAY_PORT answers 200
#   satchel-gateway CMD [ARG...]  run CMD instead (a shell, nginx -T, ...)
# Every ${NAME} a template uses must be set (the image sets defaults): a missing one is named
# and nginx does not start. Only ${UPPER_CASE} names are substituted; nginx's $variables stay.
set -euo pipefail

templates=${SATCHEL_GATEWAY_TEMPLATES:-/etc/satchel-gateway}
modules=${NGINX_MODULES_DIR:-/usr/lib/nginx/modules}
export NGINX_RUN_DIR=${NGINX_RUN_DIR:-/tmp/nginx}
export NGINX_USER_DIRECTIVE=""  # never root: nginx runs as the image's user
export NGINX_LOAD_MODULES="load_module $modules/ngx_http_echo_module.so;
load_module $modules/ngx_http_headers_more_filter_module.so;
"

render() {  # render TEMPLATE OUTPUT, as devstack/satchel_devstack/template.py does
    awk '
        {
            out = ""; rest = $0
            while (match(rest, /[$][{][A-Z_][A-Z0-9_]*[}]/)) {
                name = substr(rest, RSTART + 2, RLENGTH - 3)
                if (!(name in ENVIRON)) missing[name] = 1
                out = out substr(rest, 1, RSTART - 1) ENVIRON[name]
                rest = substr(rest, RSTART + RLENGTH)
            }
            print out rest
        }
        END {
            for (name in missing) {
                printf "satchel-gateway: %s needs %s in the environment\n", FILENAME, name > "/dev/stderr"
                failed = 1
            }
            exit failed
        }' "$1" > "$2"
}

check_values() {  # the devstack's StackConfig refuses the same values with the same words
    local failed=0
    if [[ -v AUTH_RATE_LIMIT && ! $AUTH_RATE_LIMIT =~ ^[1-9][0-9]*r/[sm]$ ]]; then
        echo "satchel-gateway: AUTH_RATE_LIMIT must be requests per second or minute, like 60r/m, got '$AUTH_RATE_LIMIT'" >&2
        failed=1
    fi
    if [[ -v AUTH_RATE_BURST && ! $AUTH_RATE_BURST =~ ^[0-9]+$ ]]; then
        echo "satchel-gateway: AUTH_RATE_BURST must not be negative, got '$AUTH_RATE_BURST'" >&2
        failed=1
    fi
    return $failed
}

render_all() {
    check_values
    for module in ngx_http_echo_module.so ngx_http_headers_more_filter_module.so; do
        [ -f "$modules/$module" ] || { echo "satchel-gateway: $modules/$module is missing" >&2; exit 1; }
    done
    mkdir -p "$NGINX_RUN_DIR/satchel.d"
    render "$templates/nginx.conf.template" "$NGINX_RUN_DIR/nginx.conf"
    render "$templates/satchel.conf.template" "$NGINX_RUN_DIR/satchel.conf"
    # satchel.conf includes satchel.d/*.conf; the location is inert until the file service
    # names it (ACCEL_CONCAT_LOCATION, local blob backend only).
    render "$templates/satchel-concat.conf.template" "$NGINX_RUN_DIR/satchel.d/concat.conf"
}

healthcheck() {
    local port=${GATEWAY_PORT##*:} status
    exec 3<>"/dev/tcp/127.0.0.1/$port"
    printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
    read -r -t 4 _ status _ <&3
    [ "$status" = 200 ]
}

case "${1:-}" in
    "")
        render_all
        exec nginx -p "$NGINX_RUN_DIR" -c "$NGINX_RUN_DIR/nginx.conf" -e stderr ;;
    render)
        render_all
        echo "$NGINX_RUN_DIR/nginx.conf" ;;
    healthcheck)
        healthcheck ;;
    *)
        exec "$@" ;;
esac

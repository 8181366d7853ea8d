#!/usr/bin/env bash
# certbot deploy hook: after a certificate is issued or renewed, check the nginx configuration and
# reload nginx, so it serves the new certificate (reload lets in-flight requests finish).
#
#   certbot certonly --webroot -w /var/www/acme -d shop.example.com \
#     --deploy-hook /srv/shipshape/current/deploy/nginx/certbot-deploy-hook.sh
#
# certbot stores the hook in the renewal configuration, so every `certbot renew` (systemd's
# certbot.timer) runs it again. NGINX_CONF selects another config (the local stack passes its own).
set -euo pipefail

conf=${NGINX_CONF:-/etc/nginx/nginx.conf}
nginx=${NGINX_BIN:-nginx}

echo "certbot-deploy-hook: ${RENEWED_LINEAGE:-certificate} updated; reloading nginx ($conf)"
"$nginx" -t -q -c "$conf"
"$nginx" -s reload -c "$conf"

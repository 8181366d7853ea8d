#!/usr/bin/env bash
# Shipshape server bootstrap: turns a fresh Debian 12 or Ubuntu 22.04/24.04 machine into an app
# server — updates and unattended security upgrades, a key-only `deployer` (and optional `admin`)
# account, hardened sshd (validated with `sshd -t` before reload), ufw, fail2ban with an sshd jail
# that starts on Debian 12, Node 24 from the checksum-verified official tarball, nginx, PM2 at boot
# for the deployer, and the release layout the deploy scripts use.
#
#   sudo deploy/server/bootstrap.sh --deployer-key "ssh-ed25519 AAAA… ci@deploy" \
#        --ssh-from 203.0.113.10/32 [--http-from 10.20.0.0/20] [--admin-key "ssh-ed25519 …"]
#   deploy/server/bootstrap.sh --dry-run …      # print every change it would make, change nothing
#
# Idempotent: every step compares what is there with what should be and changes only the
# difference; a second run reports "0 changes". Run it again after editing it (or bumping Node).
# Options (all repeatable where it makes sense):
#   --deployer-key KEY    public key allowed to log in as the deployer (needed until one is installed)
#   --admin-key KEY       public key of the `admin` account (sudo, key-only); without one, no admin
#   --ssh-from CIDR       addresses admitted to SSH (rate-limited); default: anywhere, rate-limited
#   --http-from CIDR      addresses admitted to 80/443; default: anywhere
#   --node-tarball FILE   a local copy of node-v<version>-linux-<arch>.tar.xz instead of downloading
#   --node-sha256 HEX     its SHA-256, when it is not the official tarball pinned below
#   --app-dir DIR         release layout root (default /srv/shipshape)
#   --dry-run             show what would change; change nothing
set -euo pipefail
umask 022

# --- Pinned versions ----------------------------------------------------------------------------
# Node 24 LTS, official build from nodejs.org. The SHA-256 values are those of the project's signed
# SHASUMS256.txt for this version; bumping the version means bumping both (docs/decisions/0040).
NODE_VERSION=24.11.1
declare -A NODE_SHA256_PINNED=(
  [x64]=60e3b0a8500819514aca603487c254298cd776de0698d3cd08f11dba5b8289a8
  [arm64]=6b0863fb9f627bf4a6c5948dce1de4398174a2e05dbe717503d828e211ca01f0
)
PM2_VERSION=7.0.4

DEPLOYER=deployer
ADMIN="admin"
APP_DIR=/srv/shipshape
SSHD_DROPIN=/etc/ssh/sshd_config.d/00-shipshape.conf

dry_run=false
deployer_keys=()
admin_keys=()
ssh_from=()
http_from=()
node_tarball=
node_sha256=

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

die() {
  printf 'bootstrap: %s\n' "$*" >&2
  exit 1
}

while (($# > 0)); do
  case "$1" in
    --deployer-key) deployer_keys+=("${2:?--deployer-key needs a public key}"); shift 2 ;;
    --admin-key) admin_keys+=("${2:?--admin-key needs a public key}"); shift 2 ;;
    --ssh-from) ssh_from+=("${2:?--ssh-from needs a CIDR}"); shift 2 ;;
    --http-from) http_from+=("${2:?--http-from needs a CIDR}"); shift 2 ;;
    --node-tarball) node_tarball="${2:?--node-tarball needs a file}"; shift 2 ;;
    --node-sha256) node_sha256="${2:?--node-sha256 needs a checksum}"; shift 2 ;;
    --app-dir) APP_DIR="${2:?--app-dir needs a directory}"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
done

# --- Validation of the inputs (before anything changes) -----------------------------------------
key_pattern='^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com|ssh-rsa) [A-Za-z0-9+/]+=*( .*)?$'
for key in "${deployer_keys[@]}" "${admin_keys[@]}"; do
  [[ $key =~ $key_pattern ]] || die "not an OpenSSH public key line: ${key:0:40}…"
done
cidr_pattern='^([0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?|[0-9A-Fa-f:]+:[0-9A-Fa-f:]*(/[0-9]{1,3})?)$'
for cidr in "${ssh_from[@]}" "${http_from[@]}"; do
  [[ $cidr =~ $cidr_pattern ]] || die "not an address or CIDR: $cidr"
  [[ $cidr != 0.0.0.0/0 && $cidr != ::/0 ]] || die "$cidr means anywhere: leave the option out instead"
done
[[ $node_sha256 == "" || $node_sha256 =~ ^[0-9a-f]{64}$ ]] || die "--node-sha256 must be 64 hex digits"
[[ $node_sha256 == "" || $node_tarball != "" ]] || die "--node-sha256 only goes with --node-tarball"
[[ $node_tarball == "" || -f $node_tarball ]] || die "no such file: $node_tarball"
[[ $APP_DIR == /* ]] || die "--app-dir must be an absolute path"

[[ -r /etc/os-release ]] || die "no /etc/os-release: unsupported system"
# shellcheck source=/dev/null # the running system's own file
os_id=$(. /etc/os-release && echo "${ID}-${VERSION_ID}")
case "$os_id" in
  debian-12 | ubuntu-22.04 | ubuntu-24.04) ;;
  *) die "unsupported system $os_id (Debian 12, Ubuntu 22.04 or 24.04)" ;;
esac
case "$(uname -m)" in
  x86_64) node_arch=x64 ;;
  aarch64) node_arch=arm64 ;;
  *) die "unsupported architecture $(uname -m)" ;;
esac
[[ -n $node_sha256 ]] || node_sha256=${NODE_SHA256_PINNED[$node_arch]}
if [[ $dry_run == false && $(id -u) -ne 0 ]]; then
  die "run as root (or with --dry-run to see what would change)"
fi

# systemd is PID 1 on a real server; in an image build or a chroot it is not, and units are only
# enabled, to start at the next boot.
systemd_running=false
[[ -d /run/systemd/system ]] && systemd_running=true

# --- Change tracking ----------------------------------------------------------------------------
changes=0
step() { printf '\n== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
note() { printf '   note: %s\n' "$*"; }

# change DESCRIPTION COMMAND…: runs COMMAND (or, with --dry-run, only says it would).
change() {
  local what=$1
  shift
  changes=$((changes + 1))
  if [[ $dry_run == true ]]; then
    printf '   would: %s\n' "$what"
  else
    printf '   change: %s\n' "$what"
    "$@"
  fi
}

# ensure_file PATH MODE OWNER:GROUP < content — writes only when content, mode or owner differ.
# Returns 0 when it changed (or would change) the file, 1 when the file was already right.
ensure_file() {
  local path=$1 mode=$2 owner=$3 content
  content=$(cat)
  if [[ -f $path ]] && [[ "$(cat "$path")" == "$content" ]] &&
    [[ "$(stat -c '%a %U:%G' "$path")" == "$mode $owner" ]]; then
    ok "$path"
    return 1
  fi
  change "write $path (mode $mode, $owner)" write_file "$path" "$mode" "$owner" "$content"
}

write_file() {
  local path=$1 mode=$2 owner=$3 content=$4 tmp
  mkdir -p "$(dirname "$path")"
  tmp=$(mktemp "$path.XXXXXX")
  printf '%s\n' "$content" >"$tmp"
  chown "$owner" "$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$path"
}

ensure_dir() {
  local path=$1 mode=$2 owner=$3
  if [[ -d $path ]] && [[ "$(stat -c '%a %U:%G' "$path")" == "$mode $owner" ]]; then
    ok "$path/"
    return 0
  fi
  change "directory $path (mode $mode, $owner)" install -d -m "$mode" -o "${owner%%:*}" -g "${owner##*:}" "$path"
}

unit_enabled() { systemctl is-enabled --quiet "$1" 2>/dev/null; }

ensure_enabled() {
  local unit=$1
  if unit_enabled "$unit"; then
    ok "$unit enabled"
  else
    change "enable $unit" systemctl enable --quiet "$unit"
  fi
}

# restart_if_running UNIT: applies a changed configuration where systemd runs; elsewhere the unit
# starts with it at boot.
restart_unit() {
  local unit=$1 verb=${2:-restart}
  if [[ $systemd_running == true ]]; then
    if [[ $dry_run == true ]]; then
      printf '   would: %s %s\n' "$verb" "$unit"
    else
      systemctl "$verb" "$unit"
      printf '   %s: %s\n' "$verb" "$unit"
    fi
  else
    note "systemd is not running here: $unit applies its configuration when it starts at boot"
  fi
}

user_exists() { getent passwd "$1" >/dev/null; }

# --- 1. Packages: updates, unattended security upgrades, the tools below ------------------------
step "packages"
export DEBIAN_FRONTEND=noninteractive
packages=(ca-certificates curl xz-utils openssh-server ufw fail2ban python3-systemd nginx
  unattended-upgrades apt-listchanges)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null | grep -qx installed || missing+=("$package")
done
if [[ $dry_run == false ]]; then
  # Package lists are a cache, not configuration: refreshed on every real run.
  apt-get update -qq
fi
upgradable=$(apt-get -s -o Debug::NoLocking=true upgrade 2>/dev/null | grep -c '^Inst ' || true)
if ((upgradable > 0)); then
  change "upgrade $upgradable installed packages" apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade
else
  ok "installed packages are up to date"
fi
if ((${#missing[@]} > 0)); then
  change "install ${missing[*]}" apt-get install -y -qq --no-install-recommends -o Dpkg::Options::=--force-confold "${missing[@]}"
else
  ok "packages installed: ${packages[*]}"
fi
if [[ $dry_run == true ]] && ((${#missing[@]} > 0)); then
  note "the steps below assume those packages are installed"
fi

ensure_file /etc/apt/apt.conf.d/20auto-upgrades 644 root:root <<'EOF' || true
// Shipshape bootstrap: refresh package lists and apply security upgrades every day.
APT::Periodic::Update-Package-Lists "1";
APT::Periodic::Unattended-Upgrade "1";
APT::Periodic::AutocleanInterval "7";
EOF
# Reboots are left to the operator (one server at a time, out of the load balancer first): the
# deploy health check reports /var/run/reboot-required.
ensure_file /etc/apt/apt.conf.d/52shipshape-unattended-upgrades 644 root:root <<'EOF' || true
// Shipshape bootstrap: security updates only, never an unannounced reboot.
Unattended-Upgrade::Automatic-Reboot "false";
Unattended-Upgrade::Remove-Unused-Dependencies "true";
Unattended-Upgrade::MinimalSteps "true";
EOF

# --- 2. Accounts: deployer (no sudo) and the optional admin (sudo), key-only --------------------
step "accounts"
ensure_account() {
  local name=$1
  if user_exists "$name"; then
    ok "user $name"
  else
    change "create user $name" useradd --create-home --user-group --shell /bin/bash "$name"
  fi
  # A locked password: the account logs in with keys only.
  if [[ $dry_run == false ]] || user_exists "$name"; then
    if [[ "$(passwd -S "$name" 2>/dev/null | awk '{print $2}')" == "L" ]]; then
      ok "$name password locked"
    else
      change "lock the password of $name" passwd -q -l "$name"
    fi
  fi
}

ensure_keys() {
  local name=$1
  shift
  local home
  if ! user_exists "$name"; then
    home=/home/$name
  else
    home=$(getent passwd "$name" | cut -d: -f6)
  fi
  ensure_dir "$home/.ssh" 700 "$name:$name"
  if (($# > 0)); then
    printf '%s\n' "$@" | ensure_file "$home/.ssh/authorized_keys" 600 "$name:$name" || true
  elif [[ -s $home/.ssh/authorized_keys ]]; then
    ok "$home/.ssh/authorized_keys kept (no keys given)"
  fi
}

ensure_account "$DEPLOYER"
ensure_keys "$DEPLOYER" "${deployer_keys[@]}"
allow_users=$DEPLOYER
if ((${#admin_keys[@]} > 0)) || user_exists "$ADMIN"; then
  ensure_account "$ADMIN"
  ensure_keys "$ADMIN" "${admin_keys[@]}"
  if id -nG "$ADMIN" 2>/dev/null | tr ' ' '\n' | grep -qx sudo; then
    ok "$ADMIN in group sudo"
  else
    change "add $ADMIN to group sudo" usermod -aG sudo "$ADMIN"
  fi
  # Key-only accounts have no password to give sudo.
  ensure_file /etc/sudoers.d/50-shipshape-admin 440 root:root <<EOF || true
$ADMIN ALL=(ALL:ALL) NOPASSWD: ALL
EOF
  allow_users="$ADMIN $DEPLOYER"
fi
if id -nG "$DEPLOYER" 2>/dev/null | tr ' ' '\n' | grep -qxE 'sudo|adm|wheel'; then
  die "$DEPLOYER is in a privileged group; it must not be (least privilege)"
fi

# Never lock everyone out: the accounts SSH will admit must have a key.
have_key=false
for name in $allow_users; do
  home=$(getent passwd "$name" 2>/dev/null | cut -d: -f6 || true)
  if [[ -n $home && -s $home/.ssh/authorized_keys ]]; then have_key=true; fi
done
if ((${#deployer_keys[@]} > 0 || ${#admin_keys[@]} > 0)); then have_key=true; fi
[[ $have_key == true ]] || die "no SSH key for $allow_users: pass --deployer-key (or --admin-key), or SSH would admit nobody"

# --- 3. sshd: a drop-in read before the distribution's defaults (first value wins) --------------
step "sshd"
sshd_config=$(
  cat <<EOF
# Shipshape bootstrap (deploy/server/bootstrap.sh). Read first (Include at the top of sshd_config),
# so these values win over the distribution's defaults.
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitEmptyPasswords no
PubkeyAuthentication yes
AuthenticationMethods publickey
AllowUsers $allow_users
MaxAuthTries 3
MaxSessions 4
LoginGraceTime 30
MaxStartups 10:30:60
ClientAliveInterval 300
ClientAliveCountMax 2
X11Forwarding no
AllowAgentForwarding no
AllowTcpForwarding no
PermitTunnel no
PermitUserEnvironment no
LogLevel VERBOSE
KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512
Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr
MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com
EOF
)
if ! grep -qE '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config\.d/\*\.conf' /etc/ssh/sshd_config 2>/dev/null; then
  [[ $dry_run == true ]] || die "/etc/ssh/sshd_config does not include sshd_config.d/*.conf; refusing to guess"
fi

# Installs the candidate, validates the whole configuration with `sshd -t`, and restores the
# previous file if sshd refuses it — a broken sshd config never reaches a reload.
install_sshd_dropin() {
  local backup=
  if [[ -f $SSHD_DROPIN ]]; then
    backup=$(mktemp)
    cp -p "$SSHD_DROPIN" "$backup"
  fi
  write_file "$SSHD_DROPIN" 644 root:root "$sshd_config"
  mkdir -p /run/sshd
  if ! /usr/sbin/sshd -t; then
    if [[ -n $backup ]]; then mv -f "$backup" "$SSHD_DROPIN"; else rm -f "$SSHD_DROPIN"; fi
    die "sshd -t refused the new configuration; the previous one is back in place"
  fi
  [[ -z $backup ]] || rm -f "$backup"
}

sshd_changed=false
if [[ -f $SSHD_DROPIN ]] && [[ "$(cat "$SSHD_DROPIN")" == "$sshd_config" ]] &&
  [[ "$(stat -c '%a %U:%G' "$SSHD_DROPIN")" == "644 root:root" ]]; then
  ok "$SSHD_DROPIN"
else
  change "write $SSHD_DROPIN and validate it with sshd -t" install_sshd_dropin
  sshd_changed=true
fi
if [[ $dry_run == false ]]; then
  mkdir -p /run/sshd
  /usr/sbin/sshd -t || die "sshd -t refuses the configuration"
  ok "sshd -t accepts the configuration"
fi
ssh_unit=ssh
ensure_enabled "$ssh_unit"
[[ $sshd_changed == false ]] || restart_unit "$ssh_unit" reload

# --- 4. ufw: deny in by default; SSH rate-limited (and only from --ssh-from); 80/443 ------------
step "ufw"
desired_rules=()
if ((${#ssh_from[@]} > 0)); then
  for cidr in "${ssh_from[@]}"; do desired_rules+=("limit from $cidr to any port 22 proto tcp"); done
else
  desired_rules+=("limit 22/tcp")
fi
if ((${#http_from[@]} > 0)); then
  for cidr in "${http_from[@]}"; do desired_rules+=("allow from $cidr to any port 80,443 proto tcp"); done
else
  desired_rules+=("allow 80,443/tcp")
fi
current_rules=()
if command -v ufw >/dev/null; then
  while IFS= read -r line; do
    [[ $line == ufw\ * ]] && current_rules+=("${line#ufw }")
  done < <(ufw show added 2>/dev/null || true)
fi
contains() {
  local needle=$1 item
  shift
  for item in "$@"; do [[ $item == "$needle" ]] && return 0; done
  return 1
}
for rule in "${current_rules[@]}"; do
  # shellcheck disable=SC2086 # the rule is ufw's own words, split on purpose
  contains "$rule" "${desired_rules[@]}" || change "ufw delete $rule" ufw --force delete $rule
done
for rule in "${desired_rules[@]}"; do
  if contains "$rule" "${current_rules[@]}"; then
    ok "ufw $rule"
  else
    # shellcheck disable=SC2086 # the rule is ufw's own words, split on purpose
    change "ufw $rule" ufw $rule
  fi
done
ufw_defaults=$(grep -E '^DEFAULT_(INPUT|OUTPUT|FORWARD)_POLICY=' /etc/default/ufw 2>/dev/null | sort | tr '\n' ' ' || true)
if [[ $ufw_defaults == 'DEFAULT_FORWARD_POLICY="DROP" DEFAULT_INPUT_POLICY="DROP" DEFAULT_OUTPUT_POLICY="ACCEPT" ' ]]; then
  ok "ufw defaults: deny incoming, allow outgoing, deny routed"
else
  change "ufw defaults: deny incoming, allow outgoing, deny routed" \
    sh -c 'ufw default deny incoming && ufw default allow outgoing && ufw default deny routed'
fi
if ufw status 2>/dev/null | grep -qx 'Status: active'; then
  ok "ufw active"
else
  change "enable ufw" ufw --force enable
fi

# --- 5. fail2ban: the sshd jail on the systemd journal (Debian 12 has no auth.log) --------------
step "fail2ban"
ignore_ip="127.0.0.1/8 ::1"
jail_changed=false
ensure_file /etc/fail2ban/jail.d/shipshape.conf 644 root:root <<EOF && jail_changed=true
# Shipshape bootstrap. Debian 12 ships no rsyslog, so /var/log/auth.log never appears and the
# default sshd jail (backend = auto) fails to start; the journal is where sshd logs.
[DEFAULT]
banaction = ufw
banaction_allports = ufw
bantime = 1h
bantime.increment = true
bantime.maxtime = 1w
findtime = 10m
maxretry = 5
ignoreip = $ignore_ip

[sshd]
enabled = true
backend = systemd
port = ssh
mode = aggressive
EOF
# fail2ban 1.0.2 (Debian 12) warns on every call that allowipv6 is unset; say it explicitly.
ensure_file /etc/fail2ban/fail2ban.d/shipshape.local 644 root:root <<'EOF' && jail_changed=true
[Definition]
allowipv6 = auto
EOF
if [[ $dry_run == false ]]; then
  fail2ban-client -t >/dev/null || die "fail2ban-client -t refuses the configuration"
  ok "fail2ban-client -t accepts the configuration"
fi
ensure_enabled fail2ban
[[ $jail_changed == false ]] || restart_unit fail2ban restart

# --- 6. Node 24 from the verified official tarball; PM2 ------------------------------------------
step "node $NODE_VERSION"
node_dir=/opt/node-v$NODE_VERSION-linux-$node_arch
install_node() {
  local work tarball
  work=$(mktemp -d)
  # shellcheck disable=SC2064 # expand now: the directory is this call's
  trap "rm -rf '$work'" RETURN
  tarball=$work/node.tar
  if [[ -n $node_tarball ]]; then
    cp "$node_tarball" "$tarball"
  else
    curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 --retry 3 \
      --output "$tarball" "https://nodejs.org/dist/v$NODE_VERSION/node-v$NODE_VERSION-linux-$node_arch.tar.xz"
  fi
  if ! printf '%s  %s\n' "$node_sha256" "$tarball" | sha256sum --check --status; then
    die "checksum mismatch for the Node $NODE_VERSION tarball (expected $node_sha256); nothing installed"
  fi
  # GNU tar detects the compression (the official download is .tar.xz).
  tar -xf "$tarball" -C "$work"
  [[ -x $work/node-v$NODE_VERSION-linux-$node_arch/bin/node ]] || die "the tarball holds no node-v$NODE_VERSION-linux-$node_arch/bin/node"
  chown -R root:root "$work/node-v$NODE_VERSION-linux-$node_arch"
  rm -rf "$node_dir"
  mv "$work/node-v$NODE_VERSION-linux-$node_arch" "$node_dir"
}
if [[ -x $node_dir/bin/node ]] && [[ "$("$node_dir/bin/node" --version 2>/dev/null)" == "v$NODE_VERSION" ]]; then
  ok "$node_dir"
else
  change "install Node $NODE_VERSION ($node_arch) into $node_dir, SHA-256 $node_sha256" install_node
fi
# On the default PATH of every session, interactive or not (no nvm, no profile scripts).
for tool in node npm npx corepack; do
  [[ -e $node_dir/bin/$tool || $dry_run == true ]] || continue
  if [[ "$(readlink "/usr/local/bin/$tool" 2>/dev/null || true)" == "$node_dir/bin/$tool" ]]; then
    ok "/usr/local/bin/$tool → $node_dir/bin/$tool"
  else
    change "link /usr/local/bin/$tool → $node_dir/bin/$tool" ln -sfn "$node_dir/bin/$tool" "/usr/local/bin/$tool"
  fi
done

step "pm2 $PM2_VERSION"
pm2_prefix=/opt/pm2
pm2_installed=$(grep -m1 -oE '"version": *"[^"]+"' "$pm2_prefix/lib/node_modules/pm2/package.json" 2>/dev/null | grep -oE '[0-9][^"]*' || true)
if [[ $pm2_installed == "$PM2_VERSION" ]]; then
  ok "pm2 $PM2_VERSION in $pm2_prefix"
else
  change "install pm2@$PM2_VERSION into $pm2_prefix" \
    env PATH="$node_dir/bin:$PATH" npm install --global --prefix "$pm2_prefix" --no-fund --no-audit --loglevel=error "pm2@$PM2_VERSION"
fi
if [[ "$(readlink /usr/local/bin/pm2 2>/dev/null || true)" == "$pm2_prefix/bin/pm2" ]]; then
  ok "/usr/local/bin/pm2 → $pm2_prefix/bin/pm2"
else
  change "link /usr/local/bin/pm2 → $pm2_prefix/bin/pm2" ln -sfn "$pm2_prefix/bin/pm2" /usr/local/bin/pm2
fi

# PM2 at boot for the deployer: the unit `pm2 startup systemd` would write, kept here so that it
# is reviewed and a second run leaves it alone (pm2 startup rewrites it every time).
deployer_home=$(getent passwd "$DEPLOYER" 2>/dev/null | cut -d: -f6 || echo "/home/$DEPLOYER")
pm2_unit=pm2-$DEPLOYER.service
pm2_unit_changed=false
ensure_file /etc/systemd/system/$pm2_unit 644 root:root <<EOF && pm2_unit_changed=true
[Unit]
Description=PM2 process manager for $DEPLOYER (Shipshape)
After=network-online.target
Wants=network-online.target

[Service]
Type=forking
User=$DEPLOYER
Group=$DEPLOYER
LimitNOFILE=65536
Environment=PATH=/usr/local/bin:/usr/bin:/bin
Environment=PM2_HOME=$deployer_home/.pm2
# The daemon is the cluster's primary: workers accept connections themselves, so none is left
# open in the primary when a worker dies (docs/decisions/0095-pm2-shared-listen-socket.md).
Environment=NODE_CLUSTER_SCHED_POLICY=none
PIDFile=$deployer_home/.pm2/pm2.pid
Restart=on-failure
ExecStart=/usr/local/bin/pm2 resurrect
ExecReload=/usr/local/bin/pm2 reload all
ExecStop=/usr/local/bin/pm2 kill

[Install]
WantedBy=multi-user.target
EOF
if [[ $pm2_unit_changed == true && $systemd_running == true && $dry_run == false ]]; then
  systemctl daemon-reload
fi
ensure_enabled "$pm2_unit"

# --- 7. nginx --------------------------------------------------------------------------------------
step "nginx"
# The Shipshape site itself is rendered by the deploy (deploy/nginx); until then nginx answers
# nothing and the load balancer's /ready check keeps this server out of the pool.
if [[ -e /etc/nginx/sites-enabled/default || ! -d /etc/nginx ]]; then
  change "disable nginx's default site" rm -f /etc/nginx/sites-enabled/default
else
  ok "nginx default site disabled"
fi
ensure_file /etc/nginx/conf.d/00-shipshape-hardening.conf 644 root:root <<'EOF' || true
# Shipshape bootstrap: no version in error pages and Server headers.
server_tokens off;
EOF
if [[ $dry_run == false ]]; then
  nginx -t -q || die "nginx -t refuses the configuration"
  ok "nginx -t accepts the configuration"
fi
ensure_enabled nginx

# --- 8. Release layout (the deploy scripts' contract) ----------------------------------------------
step "release layout $APP_DIR"
ensure_dir "$APP_DIR" 755 "$DEPLOYER:$DEPLOYER"
ensure_dir "$APP_DIR/releases" 755 "$DEPLOYER:$DEPLOYER"
ensure_dir "$APP_DIR/shared" 750 "$DEPLOYER:$DEPLOYER"
ensure_dir "$APP_DIR/shared/logs" 750 "$DEPLOYER:$DEPLOYER"
env_file=$APP_DIR/shared/.env
if [[ -f $env_file ]]; then
  # The deploy writes the content; the bootstrap only guarantees nobody else can read it.
  if [[ "$(stat -c '%a %U:%G' "$env_file")" == "600 $DEPLOYER:$DEPLOYER" ]]; then
    ok "$env_file (mode 600)"
  else
    change "make $env_file mode 600, owned by $DEPLOYER" sh -c "chown '$DEPLOYER:$DEPLOYER' '$env_file' && chmod 600 '$env_file'"
  fi
else
  change "create empty $env_file (mode 600)" install -m 600 -o "$DEPLOYER" -g "$DEPLOYER" /dev/null "$env_file"
fi

# --- Summary ------------------------------------------------------------------------------------
printf '\n'
if [[ $dry_run == true ]]; then
  printf 'bootstrap (dry run, %s): %d changes would be made\n' "$os_id" "$changes"
else
  printf 'bootstrap (%s): %d changes\n' "$os_id" "$changes"
fi

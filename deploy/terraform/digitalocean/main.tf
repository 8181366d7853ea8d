resource "digitalocean_vpc" "main" {
  name     = "${var.name}-vpc"
  region   = var.region
  ip_range = var.vpc_ip_range
}

resource "digitalocean_tag" "app" {
  name = local.app_tag
}

resource "digitalocean_droplet" "app" {
  count = var.app_count

  name       = format("%s-app-%02d", var.name, count.index + 1)
  image      = var.droplet_image
  size       = var.droplet_size
  region     = var.region
  vpc_uuid   = digitalocean_vpc.main.id
  ssh_keys   = var.ssh_key_fingerprints
  tags       = [digitalocean_tag.app.id]
  monitoring = true
  ipv6       = true
  user_data  = local.user_data

  graceful_shutdown = true

  lifecycle {
    # Changing the bootstrap would otherwise replace every droplet at once. New droplets get the
    # new script; existing ones are updated by running it again (it is idempotent).
    ignore_changes = [user_data]
  }
}

# Let's Encrypt certificate managed by DigitalOcean (the domain must be in DigitalOcean DNS).
# Renewal creates a new certificate: create_before_destroy keeps the load balancer served meanwhile.
resource "digitalocean_certificate" "api" {
  name    = "${var.name}-api"
  type    = "lets_encrypt"
  domains = [local.api_fqdn]

  lifecycle {
    create_before_destroy = true
  }
}

resource "digitalocean_loadbalancer" "api" {
  name        = "${var.name}-lb"
  region      = var.region
  vpc_uuid    = digitalocean_vpc.main.id
  droplet_tag = digitalocean_tag.app.id

  redirect_http_to_https = true
  # Long enough for the app's longest request; nginx's keep-alive on the droplets is longer still.
  http_idle_timeout_seconds = 60

  forwarding_rule {
    entry_protocol   = "https"
    entry_port       = 443
    target_protocol  = "http"
    target_port      = var.app_port
    certificate_name = digitalocean_certificate.api.name
  }

  # Answers only with the redirect to HTTPS (redirect_http_to_https).
  forwarding_rule {
    entry_protocol  = "http"
    entry_port      = 80
    target_protocol = "http"
    target_port     = var.app_port
  }

  # /ready, not /health: a droplet whose database or cache is unreachable, or which is draining for
  # a deploy, leaves the pool. With these values it leaves ~30 s after /ready fails (3 × 10 s) and
  # returns ~50 s after it passes again (5 × 10 s); deploys wait for both.
  healthcheck {
    protocol                 = "http"
    port                     = var.app_port
    path                     = "/ready"
    check_interval_seconds   = 10
    response_timeout_seconds = 5
    unhealthy_threshold      = 3
    healthy_threshold        = 5
  }
}

resource "digitalocean_record" "api" {
  domain = var.domain
  type   = "A"
  name   = var.api_hostname
  value  = digitalocean_loadbalancer.api.ip
  ttl    = 300
}

# Droplets: nginx only from the load balancer, SSH only from the admin addresses, nothing else in.
resource "digitalocean_firewall" "app" {
  name = "${var.name}-app"
  tags = [digitalocean_tag.app.id]

  inbound_rule {
    protocol                  = "tcp"
    port_range                = tostring(var.app_port)
    source_load_balancer_uids = [digitalocean_loadbalancer.api.id]
  }

  inbound_rule {
    protocol         = "tcp"
    port_range       = "22"
    source_addresses = var.admin_cidrs
  }

  inbound_rule {
    protocol         = "icmp"
    source_addresses = [var.vpc_ip_range]
  }

  # Outbound: DNS, NTP, HTTP(S) for packages and Let's Encrypt, and the managed databases.
  outbound_rule {
    protocol              = "udp"
    port_range            = "53"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "udp"
    port_range            = "123"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "tcp"
    port_range            = "1-65535"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }

  outbound_rule {
    protocol              = "icmp"
    destination_addresses = ["0.0.0.0/0", "::/0"]
  }
}

resource "digitalocean_database_cluster" "postgres" {
  name                 = "${var.name}-pg"
  engine               = "pg"
  version              = var.postgres_version
  size                 = var.database_size
  region               = var.region
  node_count           = var.database_nodes
  private_network_uuid = digitalocean_vpc.main.id
}

resource "digitalocean_database_db" "app" {
  cluster_id = digitalocean_database_cluster.postgres.id
  name       = var.name
}

resource "digitalocean_database_user" "app" {
  cluster_id = digitalocean_database_cluster.postgres.id
  name       = "${var.name}_app"
}

resource "digitalocean_database_firewall" "postgres" {
  cluster_id = digitalocean_database_cluster.postgres.id

  rule {
    type  = "tag"
    value = digitalocean_tag.app.id
  }
}

# DigitalOcean's managed Redis is now Valkey: the same protocol, so REDIS_URL works unchanged.
resource "digitalocean_database_cluster" "cache" {
  name                 = "${var.name}-cache"
  engine               = "valkey"
  version              = "8"
  size                 = var.cache_size
  region               = var.region
  node_count           = 1
  private_network_uuid = digitalocean_vpc.main.id
}

resource "digitalocean_database_firewall" "cache" {
  cluster_id = digitalocean_database_cluster.cache.id

  rule {
    type  = "tag"
    value = digitalocean_tag.app.id
  }
}

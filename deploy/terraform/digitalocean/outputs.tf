output "api_url" {
  description = "Public URL of the API (HTTPS through the load balancer)."
  value       = "https://${local.api_fqdn}"
}

output "load_balancer_ip" {
  description = "Public address of the load balancer (the DNS record points here)."
  value       = digitalocean_loadbalancer.api.ip
}

output "app_droplets" {
  description = "Name, public and private address of each app droplet (deploy targets; SSH from admin_cidrs only)."
  value = [for droplet in digitalocean_droplet.app : {
    name       = droplet.name
    public_ip  = droplet.ipv4_address
    private_ip = droplet.ipv4_address_private
  }]
}

output "database_url" {
  description = "PostgreSQL connection string for the app user over the VPC (DATABASE_URL)."
  value       = "postgresql://${digitalocean_database_user.app.name}:${digitalocean_database_user.app.password}@${digitalocean_database_cluster.postgres.private_host}:${digitalocean_database_cluster.postgres.port}/${digitalocean_database_db.app.name}?sslmode=require"
  sensitive   = true
}

output "redis_url" {
  description = "Valkey/Redis connection string over the VPC, TLS (REDIS_URL)."
  value       = digitalocean_database_cluster.cache.private_uri
  sensitive   = true
}

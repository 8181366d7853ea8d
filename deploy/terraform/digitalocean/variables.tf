# Inputs. Every variable validates what it can, so a bad value fails at plan time with a clear
# message instead of half-creating the infrastructure. Validations only use the variable itself,
# so test/ops/terraform.test.ts can run them with the real terraform binary and no provider.

variable "name" {
  description = "Prefix of every resource name (lowercase letters, digits and dashes)."
  type        = string
  default     = "shipshape"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "DigitalOcean region slug for every resource (one region: the VPC cannot span regions)."
  type        = string
  default     = "fra1"

  validation {
    condition     = can(regex("^[a-z]{3}[0-9]$", var.region))
    error_message = "region must be a region slug such as fra1, ams3, nyc3 or sfo3."
  }
}

variable "vpc_ip_range" {
  description = "Private range of the VPC (a /16 to /24 in RFC 1918 space)."
  type        = string
  default     = "10.20.0.0/20"

  validation {
    condition = (
      can(cidrhost(var.vpc_ip_range, 0)) &&
      tonumber(split("/", var.vpc_ip_range)[1]) >= 16 &&
      tonumber(split("/", var.vpc_ip_range)[1]) <= 24 &&
      can(regex("^(10\\.|172\\.(1[6-9]|2[0-9]|3[01])\\.|192\\.168\\.)", var.vpc_ip_range))
    )
    error_message = "vpc_ip_range must be an RFC 1918 CIDR between /16 and /24, e.g. 10.20.0.0/20."
  }
}

variable "app_count" {
  description = "Number of app droplets behind the load balancer (two or more survive one failure)."
  type        = number
  default     = 3

  validation {
    condition     = var.app_count >= 1 && var.app_count <= 20 && floor(var.app_count) == var.app_count
    error_message = "app_count must be a whole number from 1 to 20."
  }
}

variable "droplet_size" {
  description = "Size slug of the app droplets."
  type        = string
  default     = "s-2vcpu-4gb"

  validation {
    condition     = can(regex("^[a-z0-9-]+$", var.droplet_size))
    error_message = "droplet_size must be a size slug such as s-2vcpu-4gb."
  }
}

variable "droplet_image" {
  description = "Base image of the app droplets: one the bootstrap supports."
  type        = string
  default     = "debian-12-x64"

  validation {
    condition     = contains(["debian-12-x64", "ubuntu-22-04-x64", "ubuntu-24-04-x64"], var.droplet_image)
    error_message = "droplet_image must be debian-12-x64, ubuntu-22-04-x64 or ubuntu-24-04-x64 (what deploy/server/bootstrap.sh supports)."
  }
}

variable "ssh_key_fingerprints" {
  description = "Fingerprints (or IDs) of SSH keys already in the DigitalOcean account, installed for root at creation. At least one."
  type        = list(string)

  validation {
    condition = length(var.ssh_key_fingerprints) > 0 && alltrue([
      for key in var.ssh_key_fingerprints :
      can(regex("^([0-9a-f]{2}:){15}[0-9a-f]{2}$", key)) || can(regex("^[0-9]+$", key))
    ])
    error_message = "ssh_key_fingerprints needs at least one MD5 fingerprint (aa:bb:...:ff) or numeric key ID."
  }
}

variable "deployer_ssh_public_keys" {
  description = "Public keys allowed to log in as the deployer user (the deploy pipeline's key). At least one."
  type        = list(string)

  validation {
    condition = length(var.deployer_ssh_public_keys) > 0 && alltrue([
      for key in var.deployer_ssh_public_keys :
      can(regex("^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|ssh-rsa) [A-Za-z0-9+/=]+( [^\\n]*)?$", key))
    ])
    error_message = "deployer_ssh_public_keys needs at least one OpenSSH public key line (ssh-ed25519 AAAA... comment)."
  }
}

variable "admin_ssh_public_keys" {
  description = "Public keys of the `admin` account (sudo, key-only). Empty: no admin account; servers are replaced, not administered."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([
      for key in var.admin_ssh_public_keys :
      can(regex("^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\\.com|ssh-rsa) [A-Za-z0-9+/=]+( [^\\n]*)?$", key))
    ])
    error_message = "admin_ssh_public_keys must be OpenSSH public key lines (ssh-ed25519 AAAA... comment)."
  }
}

variable "admin_cidrs" {
  description = "Addresses allowed to reach SSH (port 22) on the droplets. Never the whole internet."
  type        = list(string)

  validation {
    condition = length(var.admin_cidrs) > 0 && alltrue([
      for cidr in var.admin_cidrs :
      can(cidrhost(cidr, 0)) && !contains(["0.0.0.0/0", "::/0"], cidr)
    ])
    error_message = "admin_cidrs needs at least one CIDR, and 0.0.0.0/0 or ::/0 are refused: SSH is for admin addresses only."
  }
}

variable "domain" {
  description = "A domain managed in DigitalOcean DNS (the Let's Encrypt certificate needs it)."
  type        = string

  validation {
    condition     = can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,}$", var.domain))
    error_message = "domain must be a lowercase DNS name such as example.com."
  }
}

variable "api_hostname" {
  description = "Name of the API under the domain (\"@\" for the apex)."
  type        = string
  default     = "api"

  validation {
    condition     = var.api_hostname == "@" || can(regex("^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$", var.api_hostname))
    error_message = "api_hostname must be \"@\" or a single DNS label such as api."
  }
}

variable "app_port" {
  description = "Port nginx listens on inside the droplets (the load balancer's target)."
  type        = number
  default     = 80

  validation {
    condition     = var.app_port >= 1 && var.app_port <= 65535
    error_message = "app_port must be a TCP port."
  }
}

variable "postgres_version" {
  description = "Major version of the managed PostgreSQL cluster."
  type        = string
  default     = "16"

  validation {
    condition     = contains(["15", "16", "17"], var.postgres_version)
    error_message = "postgres_version must be 15, 16 or 17 (the versions Shipshape is tested on and DigitalOcean offers)."
  }
}

variable "database_size" {
  description = "Size slug of each managed database node."
  type        = string
  default     = "db-s-1vcpu-2gb"

  validation {
    condition     = can(regex("^db-[a-z0-9-]+$", var.database_size))
    error_message = "database_size must be a database size slug such as db-s-1vcpu-2gb."
  }
}

variable "database_nodes" {
  description = "Nodes of the PostgreSQL cluster (1 primary + standbys; 2 or more for automatic failover)."
  type        = number
  default     = 2

  validation {
    condition     = var.database_nodes >= 1 && var.database_nodes <= 3 && floor(var.database_nodes) == var.database_nodes
    error_message = "database_nodes must be 1, 2 or 3."
  }
}

variable "cache_size" {
  description = "Size slug of the managed Valkey (Redis-compatible) node."
  type        = string
  default     = "db-s-1vcpu-1gb"

  validation {
    condition     = can(regex("^db-[a-z0-9-]+$", var.cache_size))
    error_message = "cache_size must be a database size slug such as db-s-1vcpu-1gb."
  }
}

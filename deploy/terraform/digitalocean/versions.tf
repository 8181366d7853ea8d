# Shipshape on DigitalOcean: the growth-stage layout (load balancer → app droplets running nginx +
# PM2, managed PostgreSQL and Valkey/Redis), all inside one VPC. See README "Infrastructure".
terraform {
  required_version = ">= 1.9.0"

  required_providers {
    digitalocean = {
      source  = "digitalocean/digitalocean"
      version = "~> 2.99"
    }
  }
}

# The token comes from the environment (DIGITALOCEAN_TOKEN), never from a file in the repository.
provider "digitalocean" {}

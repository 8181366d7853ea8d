# Values derived from the variables alone (no resource attributes), so that
# test/ops/terraform.test.ts can evaluate them with the real terraform binary and no provider.

# One tag ties the layout together: the load balancer targets droplets by it, the cloud firewall
# applies to it, and the database firewalls admit only it. A replaced or added droplet joins all
# three by carrying the tag, with no edit to the load balancer or the firewalls.
locals {
  app_tag  = "${var.name}-app"
  api_fqdn = var.api_hostname == "@" ? var.domain : "${var.api_hostname}.${var.domain}"

  # The bootstrap runs once, at first boot, through cloud-init (deploy/server/bootstrap.sh; it is
  # idempotent, so an operator can run it again over SSH after changing it).
  bootstrap_args = concat(
    flatten([for key in var.deployer_ssh_public_keys : ["--deployer-key", key]]),
    flatten([for key in var.admin_ssh_public_keys : ["--admin-key", key]]),
    flatten([for cidr in var.admin_cidrs : ["--ssh-from", cidr]]),
    # Only the load balancer reaches nginx; it connects from inside the VPC. The cloud firewall
    # narrows this further to the load balancer itself.
    ["--http-from", var.vpc_ip_range],
  )
  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    bootstrap      = file("${path.module}/../../server/bootstrap.sh")
    bootstrap_args = local.bootstrap_args
  })
}

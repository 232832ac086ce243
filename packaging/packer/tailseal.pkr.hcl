# Packer example: bake tailseal into an AMI from the .deb that packaging/build.sh makes.
#
#   packaging/build.sh                   # dist/tailseal_<version>-1_amd64.deb
#   packer init packaging/packer && packer build -var collector=https://... packaging/packer
#
# The bake installs and enables the agent but never starts it, and leaves no instance
# identity behind (state directory, machine-id): every instance started from the image opens
# its own stream at first boot. Other builders: the same three steps (install the package or
# run packaging/install.sh, write /etc/tailseal/environment, clean up) in their own syntax.
packer {
  required_plugins {
    amazon = {
      source  = "github.com/hashicorp/amazon"
      version = ">= 1.3.0"
    }
  }
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "collector" {
  type        = string
  description = "HTTPS endpoint of the tailseal collector the instances ship to"
}

variable "deb" {
  type    = string
  default = "dist/tailseal_0.1.0-1_amd64.deb"
}

source "amazon-ebs" "debian12" {
  region        = var.region
  instance_type = "t3.small"
  ssh_username  = "admin"
  ami_name      = "debian12-tailseal-{{timestamp}}"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      virtualization-type = "hvm"
    }
    owners      = ["136693071363"] # Debian
    most_recent = true
  }
}

build {
  sources = ["source.amazon-ebs.debian12"]

  provisioner "file" {
    source      = var.deb
    destination = "/tmp/tailseal.deb"
  }

  provisioner "shell" {
    environment_vars = ["COLLECTOR=${var.collector}", "BUILD=${packer.build_name}"]
    inline = [
      "sudo apt-get update",
      "sudo apt-get install -y /tmp/tailseal.deb",
      # Only the endpoint differs from the stock config; the token arrives at first boot
      # (cloud-init, a secrets agent) as /etc/tailseal/token.
      "echo \"TAILSEAL_SINKS__CENTRAL__ENDPOINT=$COLLECTOR\" | sudo tee -a /etc/tailseal/environment",
      "echo \"{\\\"packer_build\\\": \\\"$BUILD\\\"}\" | sudo tee /etc/tailseal/provenance.json",
      "sudo /opt/tailseal/bin/tailseal check -c /etc/tailseal/tailseal.toml",
      # Enabled for the next boot, not running now, and no identity baked in.
      "systemctl is-enabled tailseal.service",
      "! systemctl is-active --quiet tailseal.service",
      "sudo rm -rf /var/lib/tailseal /tmp/tailseal.deb",
      "sudo truncate -s 0 /etc/machine-id",
    ]
  }
}

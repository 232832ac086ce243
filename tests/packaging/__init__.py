"""Packaging: the systemd unit, the .deb/.rpm, the container image, the Kubernetes manifests."""

"""Rack in a box: Debian 12 nodes as podman containers, provisioned by the real Ansible roles over SSH."""

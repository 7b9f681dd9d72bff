"""Stubs generated from proto/berth/v1 by scripts/gen-clients.sh: do not edit."""

"""Zones provisioned by catalog zones (RFC 9432): ``catalog`` parses a catalog version,
``membership`` turns successive versions into member zones added, changed and removed."""

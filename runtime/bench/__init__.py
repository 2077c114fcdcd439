"""Davit runtime benchmark: Davit against raw torch and the peer servers, on loopback only."""

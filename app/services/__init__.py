"""Tenant-data services: plain functions over a session bound to one tenant."""

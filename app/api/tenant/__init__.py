"""Tenant endpoints under /v1, authenticated by a tenant API key that binds the tenant."""

"""Platform endpoints under /v1/admin, guarded by the admin token."""

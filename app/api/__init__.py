"""The HTTP layer: blueprints, authentication, problem+json errors. Calls into the core only."""

"""marshmallow schemas: request validation and the OpenAPI document come from the same classes."""

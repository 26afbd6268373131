"""The HTTP layer: blueprints, authentication, problem+json errors. Calls into the core only."""

from flask_smorest import Api

#: The OpenAPI-documented API; initialised, with every blueprint, in app.factory.
rest_api = Api()

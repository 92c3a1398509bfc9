"""HTTP in, HTTP out: flask-smorest blueprints that call the services."""
from .auth import blp as auth_blueprint
from .jwks import blp as jwks_blueprint

BLUEPRINTS = (auth_blueprint, jwks_blueprint)

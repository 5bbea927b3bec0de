"""HTTP: the Flask application and its blueprints."""

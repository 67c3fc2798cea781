"""A tiny Flask shop on Flask-SQLAlchemy and Flask-Migrate, guarded by preflight with
PREFLIGHT_TOOL=flask-migrate. create_app() configures the database and never migrates it:
the guard runs `flask db upgrade` before the server starts."""

import os

from flask import Flask, jsonify
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


def database_url() -> str:
    """The guard's database: PREFLIGHT_DATABASE_URL for every run of `flask db` (live or a
    private scratch copy), PREFLIGHT_DB for the app itself."""
    if "PREFLIGHT_DATABASE_URL" in os.environ:
        return os.environ["PREFLIGHT_DATABASE_URL"]
    return "sqlite:///" + os.environ.get("PREFLIGHT_DB", "/data/app.db")


def create_app() -> Flask:
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url()
    db.init_app(app)
    migrate.init_app(app, db, render_as_batch=True)  # SQLite: ALTER through table copies

    from . import models

    @app.get("/health")
    def health():
        version = db.session.execute(db.text("SELECT version_num FROM alembic_version")).scalar()
        return jsonify(version=version, products=db.session.query(models.Product).count())

    @app.post("/products/<name>")
    def add(name: str):
        product = models.Product(name=name, price_cents=100)
        db.session.add(product)
        db.session.commit()
        return jsonify(id=product.id)

    return app

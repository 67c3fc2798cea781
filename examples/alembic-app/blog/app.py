"""A tiny Flask + SQLAlchemy blog: the database is PREFLIGHT_DB (set by the guard's image)."""

import os

import sqlalchemy as sa
from flask import Flask, jsonify

from .models import posts, users

app = Flask(__name__)
engine = sa.create_engine("sqlite:///" + os.environ.get("PREFLIGHT_DB", "/data/app.db"))


@app.get("/health")
def health():
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        count = conn.execute(sa.select(sa.func.count()).select_from(posts)).scalar()
    return jsonify(version=version, posts=count)


@app.post("/users/<name>")
def add_user(name: str):
    with engine.begin() as conn:
        new = conn.execute(users.insert().values(name=name)).inserted_primary_key[0]
    return jsonify(id=new)

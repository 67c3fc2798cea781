"""The head schema (Flask-Migrate autogenerates revisions from it)."""

from . import db


class Product(db.Model):
    __tablename__ = "products"
    id = db.Column(db.Integer, primary_key=True)
    name = db.Column(db.String(80), nullable=False)
    price_cents = db.Column(db.Integer, nullable=False, server_default="0")
    sku = db.Column(db.String(20), nullable=True, index=True)


class Order(db.Model):
    __tablename__ = "orders"
    id = db.Column(db.Integer, primary_key=True)
    product_id = db.Column(db.Integer, db.ForeignKey("products.id"), nullable=False)
    quantity = db.Column(db.Integer, nullable=False)

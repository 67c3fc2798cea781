"""`python -m notes`: serve the app on port 8000 (the standard library's WSGI server)."""

from wsgiref.simple_server import make_server

from .app import application

with make_server("0.0.0.0", 8000, application) as server:
    server.serve_forever()

"""A small WSGI app standing in for StarPunk: it reads the database preflight guards."""

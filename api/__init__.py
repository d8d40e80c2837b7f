"""The HTTP API: invoices, payments (with a signed webhook), customers and reports over FastAPI.

``api.app.create_app(settings)`` builds the application; ``api.server.serve_api`` runs it.
"""
